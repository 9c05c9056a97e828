"""The lean HTTP/1.1 client's request builder and response parser."""

from __future__ import annotations

import pytest

from data_plane.load.payloads import Payload
from data_plane.load.targets import LoadTargetError
from data_plane.load.transports import Http1Transport, _build_request, _parse_response, make_transport

OK = b'{"routed_to":"xgboost"}'


def parse(raw: bytes, eof: bool = False):
    return _parse_response(bytearray(raw), eof=eof)


def test_content_length_response_and_keep_alive() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(OK) + OK
    assert parse(raw) == (200, OK, len(raw), True)
    assert parse(raw[:-3]) is None  # body not complete yet
    assert parse(raw[:20]) is None  # headers not complete yet


def test_header_names_are_case_insensitive_and_close_is_honoured() -> None:
    raw = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\nCONNECTION: Close\r\n\r\n{}"
    assert parse(raw) == (503, b"{}", len(raw), False)
    old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    assert parse(old)[3] is False
    old_ka = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}"
    assert parse(old_ka)[3] is True


def test_chunked_body_split_anywhere() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"a\r\n" + OK[:10] + b"\r\n" + b"%x;ext=1\r\n" % (len(OK) - 10) + OK[10:] + b"\r\n0\r\n\r\n")
    assert parse(raw) == (200, OK, len(raw), True)
    for cut in range(len(raw) - 1):
        assert parse(raw[:cut]) is None, cut
    with_trailer = raw[:-2] + b"X-Checksum: 1\r\n\r\n"
    assert parse(with_trailer) == (200, OK, len(with_trailer), True)


def test_close_delimited_and_bodiless_responses() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + OK
    assert parse(raw) is None
    assert parse(raw, eof=True) == (200, OK, len(raw), False)
    assert parse(b"HTTP/1.1 204 No Content\r\n\r\n") == (204, b"", 27, True)


@pytest.mark.parametrize("raw", [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"])
def test_malformed_responses_raise(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse(raw)


def test_request_bytes_carry_body_length_and_headers() -> None:
    raw = _build_request("/api/v1/predict", "127.0.0.1:8000",
                         Payload(b'{"a":1}', {"Content-Type": "application/json", "card-id": "card-7",
                                              "Content-Length": "999"}))
    head, body = raw.split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /api/v1/predict HTTP/1.1"
    assert b"Host: 127.0.0.1:8000" in lines and b"Content-Length: 7" in lines
    assert b"card-id: card-7" in lines and b"Content-Length: 999" not in lines
    assert body == b'{"a":1}'


def test_https_and_unknown_transports_are_refused() -> None:
    with pytest.raises(LoadTargetError, match="plain http"):
        Http1Transport("https://127.0.0.1/x", [Payload(b"{}")], 1, 1.0)
    with pytest.raises(LoadTargetError, match="aiohttp, http1"):
        make_transport("curl", "http://127.0.0.1/x", [Payload(b"{}")], 1, 1.0)
