"""The conservative default: when no tier of a chain can answer, the edge still answers 200.

Two Envoy mechanisms cover the two ways a request can fail on the predict routes:
- `local_reply_config`: Envoy's own replies (no healthy upstream, connect failure, overflow,
  no cluster, retries spent: response flags UH/UF/UO/NR/NC/URX/UC/UR/LR; UT for a timeout).
- the custom-response filter: an upstream's own 502/503/504 after every retry, e.g. a sidecar
  whose model server is down answers 503 itself, and that is not an Envoy local reply at the edge.
Both produce the seed's schema flagged as fraud (false positive over false negative).
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, substitution_format_string_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.custom_response.v3 import custom_response_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.http.custom_response.local_response_policy.v3 import local_response_policy_pb2
from envoy.type.matcher.v3 import status_code_input_pb2, string_pb2
from google.protobuf import struct_pb2
from xds.core.v3 import extension_pb2
from xds.type.matcher.v3 import matcher_pb2 as xm
from xds.type.matcher.v3 import string_pb2 as xds_string_pb2

from control_plane.xds.resources import pack, u32

CUSTOM_RESPONSE_FILTER = "envoy.filters.http.custom_response"
PREDICT_PREFIX = "/api/v1/predict"
UNAVAILABLE = "all_services_unavailable"
TIMED_OUT = "all_services_timed_out"
UNAVAILABLE_FLAGS = ("UH", "UF", "UO", "NR", "NC", "URX", "UC", "UR", "LR")
TIMEOUT_FLAGS = ("UT",)
UPSTREAM_FAILURE_CODES = ("502", "503", "504")


def conservative_default_body(reason: str) -> substitution_format_string_pb2.SubstitutionFormatString:
    """The seed's response schema, flagged as fraud; latency_ms is Envoy's own duration (a number)."""
    body = struct_pb2.Struct()
    body.update({
        "fraud_probability": 1.0,
        "is_fraud": True,
        "model_version": "conservative_default",
        "model_type": "conservative_default",
        "latency_ms": "%DURATION%",  # a single command keeps its type: a number
        "routed_to": "edge",
        "fallback_reason": reason,
    })
    return substitution_format_string_pb2.SubstitutionFormatString(json_format=body,
                                                                    content_type="application/json")


def _mapper(flags: tuple[str, ...], reason: str) -> hcm_pb2.ResponseMapper:
    path = rc.HeaderMatcher(name=":path", string_match=string_pb2.StringMatcher(prefix=PREDICT_PREFIX))
    on_predict = accesslog_pb2.AccessLogFilter(header_filter=accesslog_pb2.HeaderFilter(header=path))
    flagged = accesslog_pb2.AccessLogFilter(
        response_flag_filter=accesslog_pb2.ResponseFlagFilter(flags=list(flags)))
    both = accesslog_pb2.AndFilter(filters=[on_predict, flagged])
    return hcm_pb2.ResponseMapper(filter=accesslog_pb2.AccessLogFilter(and_filter=both), status_code=u32(200),
                                  body_format_override=conservative_default_body(reason))


# Envoy's own refusals of a request, in the API's error shape (data_plane.contracts.errors):
# status -> (field, rule, message). Every route's body limit is in docs/openapi.yaml.
REFUSALS = {
    413: ("$body", "max_bytes", "the request body is larger than this endpoint accepts "
                                "(64 KiB for /api/v1/predict; limits in docs/openapi.yaml)"),
    408: ("$body", "timeout", "the request did not arrive completely in time (10 s): send the whole "
                              "body at once"),
}


def _refusal(status: int, field: str, rule: str, message: str) -> hcm_pb2.ResponseMapper:
    body = struct_pb2.Struct()
    body.update({"error": "validation_error", "field": field, "rule": rule, "message": message})
    code = accesslog_pb2.StatusCodeFilter(comparison=accesslog_pb2.ComparisonFilter(
        op=accesslog_pb2.ComparisonFilter.EQ,
        value=base_pb2.RuntimeUInt32(default_value=status, runtime_key=f"fraud_mesh.refusal_{status}")))
    fmt = substitution_format_string_pb2.SubstitutionFormatString(json_format=body,
                                                                   content_type="application/json")
    return hcm_pb2.ResponseMapper(filter=accesslog_pb2.AccessLogFilter(status_code_filter=code),
                                  body_format_override=fmt)


def local_reply_config() -> hcm_pb2.LocalReplyConfig:
    """Envoy's own 503/504 on the predict routes -> 200 with the conservative default; its own
    413/408 anywhere -> the API's JSON error shape naming the rule (not Envoy's plain text)."""
    return hcm_pb2.LocalReplyConfig(mappers=[_mapper(UNAVAILABLE_FLAGS, UNAVAILABLE),
                                             _mapper(TIMEOUT_FLAGS, TIMED_OUT),
                                             *(_refusal(status, *why) for status, why in REFUSALS.items())])


def _status_is(code: str) -> xm.Matcher.MatcherList.Predicate:
    single = xm.Matcher.MatcherList.Predicate.SinglePredicate(
        input=extension_pb2.TypedExtensionConfig(
            name="status", typed_config=pack(status_code_input_pb2.HttpResponseStatusCodeMatchInput())),
        value_match=xds_string_pb2.StringMatcher(exact=code))
    return xm.Matcher.MatcherList.Predicate(single_predicate=single)


def custom_response_filter(enabled: bool = False) -> custom_response_pb2.CustomResponse:
    """Listener-level: empty (a no-op); per predict route: upstream 502/503/504 -> the default."""
    if not enabled:
        return custom_response_pb2.CustomResponse()
    policy = local_response_policy_pb2.LocalResponsePolicy(body_format=conservative_default_body(UNAVAILABLE),
                                                           status_code=u32(200))
    any_failure = xm.Matcher.MatcherList.Predicate(or_matcher=xm.Matcher.MatcherList.Predicate.PredicateList(
        predicate=[_status_is(code) for code in UPSTREAM_FAILURE_CODES]))
    field = xm.Matcher.MatcherList.FieldMatcher(
        predicate=any_failure,
        on_match=xm.Matcher.OnMatch(action=extension_pb2.TypedExtensionConfig(
            name="conservative_default", typed_config=pack(policy))))
    return custom_response_pb2.CustomResponse(
        custom_response_matcher=xm.Matcher(matcher_list=xm.Matcher.MatcherList(matchers=[field])))
