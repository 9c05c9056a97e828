"""`meshctl load`: send bounded synthetic traffic to the edge (open loop at a rate, or closed loop).

Open loop (latency free of coordinated omission)::

    meshctl load --rate 1000 --duration 30 [--scenario covariate_shift] [--cards 50]

Closed loop (how much can it take)::

    meshctl load --concurrency 32 --duration 10      # or --requests 50000

Delayed labels (each request gets our own x-request-id; its true label is published on
mesh.labels --label-delay seconds after the answer, like a chargeback)::

    meshctl load --rate 200 --duration 60 --labels --label-delay 30

Exit codes: 0 = run finished (whatever the server answered), 1 = refused (argument out of
bounds, unknown scenario, non-loopback target without --allow-remote), 2 = unparseable
arguments, 3 = the target never answered (nothing listening: start the mesh with `meshctl up`).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

from meshctl.output import emit_json, table

if TYPE_CHECKING:  # the engine (aiohttp; numpy via the generator) loads only when a run starts
    from data_plane.load import LoadResult, Progress

EXIT_UNREACHABLE = 3
# Literal so that building meshctl's parser (every command, every call) stays fast;
# tests/unit/test_load_cli.py checks them against the real lists.
TRANSPORT_CHOICES = ("auto", "aiohttp", "http1")
SCENARIO_NAMES = ("covariate_shift", "merchant_mix", "new_fraud_pattern")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "load", help="send synthetic scoring traffic to the mesh (open or closed loop)",
        description="Send bounded synthetic traffic to POST /api/v1/predict. Give --rate R --duration S "
                    "for an open loop (fixed rate, latency counted from the intended send time), or "
                    "--concurrency C with --duration S or --requests N for a closed loop.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None,
                   help="target (default: the edge, http://127.0.0.1:<edge port>/api/v1/predict)")
    p.add_argument("--rate", type=float, default=None, help="open loop: requests per second")
    p.add_argument("--duration", type=float, default=None, help="seconds to run")
    p.add_argument("--concurrency", type=int, default=None, help="closed loop: parallel workers")
    p.add_argument("--requests", type=int, default=None, help="closed loop: total requests to send")
    p.add_argument("--scenario", default=None,
                   help=f"drift scenario for the generated traffic (one of: {', '.join(SCENARIO_NAMES)})")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--cards", type=int, default=0,
                   help="draw card ids from a pool of N and send them as the card-id header "
                        "(sticky A/B routing); 0 = no header")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout in seconds")
    p.add_argument("--max-outstanding", type=int, default=None,
                   help="open loop: most requests in flight (default rate/4, 64-1024)")
    p.add_argument("--transport", choices=TRANSPORT_CHOICES, default="auto",
                   help="HTTP client: http1 (lean keep-alive client, ~3x less CPU per request; "
                        "plain http only) or aiohttp; auto (default) = http1 for http://, "
                        "aiohttp for https://")
    p.add_argument("--labels", action="store_true",
                   help="send our own x-request-id per request and publish each answered request's "
                        "true label (Label events on mesh.labels) --label-delay seconds later")
    p.add_argument("--label-delay", type=float, default=5.0,
                   help="seconds between an answer and its label, like a chargeback (default 5); "
                        "the command waits for the last ones (Ctrl-C drops them)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a target that is not 127.0.0.1/localhost/::1")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Plan, run and report one load run."""
    from data_plane.eventbus import EventBus
    from data_plane.load import LoadPlan, run_load, synthetic_payloads
    from data_plane.load.labels import LabelSender, labelled_payloads
    from data_plane.settings import Settings

    url = args.url or f"{Settings.from_env().edge_url}/api/v1/predict"
    plan = LoadPlan(url=url, rate=args.rate, duration=args.duration, concurrency=args.concurrency,
                    requests=args.requests, timeout=args.timeout, max_outstanding=args.max_outstanding,
                    allow_remote=args.allow_remote, transport=args.transport)
    sender = None
    if args.labels:
        payloads, truths = labelled_payloads(seed=args.seed, scenario=args.scenario, cards=args.cards)
        sender = LabelSender(truths, EventBus(Settings.from_env().nats_url, "meshctl-load-labels"),
                             delay_s=args.label_delay)
        print(f"meshctl load: request ids {sender.run_id}-<n>; each answered request's label goes to "
              f"mesh.labels {args.label_delay:g} s later", file=sys.stderr)
    else:
        payloads = synthetic_payloads(seed=args.seed, scenario=args.scenario, cards=args.cards)
    bar = None if args.no_progress else ProgressLine(sys.stderr)
    result = run_load(plan, payloads, bar, stop_on_sigint=True, labels=sender)
    if bar:
        bar.finish()
    labels = sender.summary() if sender is not None else None
    if args.json:
        emit_json({**result.to_dict(), "seed": args.seed, "scenario": args.scenario,
                   "cards": args.cards, "labels": labels})
    else:
        print(render(result))
        if labels is not None:
            print("\n" + table(["labels", ""], [[k, v] for k, v in labels.items()]))
    if result.mode == "open" and result.late > max(1, result.sent // 100):
        print(f"meshctl load: warning: {result.late} of {result.sent} requests left more than "
              f"{plan.late_after_ms:g} ms behind schedule (max {result.max_dispatch_lag_ms:.0f} ms): "
              "the generator could not keep up, so latencies include its own delay. Lower --rate "
              "or free some CPU.", file=sys.stderr)
    if result.unreachable:
        print(f"meshctl load: nothing answered at {url} for the whole run "
              f"({result.by_error.get('connect', 0)} connection errors). Is the mesh running? "
              "Start it with `meshctl up` (or check --url).", file=sys.stderr)
        return EXIT_UNREACHABLE
    return 0


class ProgressLine:
    """One updating status line on a terminal; one plain line every 5 s when not a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._drawn = False

    def __call__(self, p: Progress) -> None:
        total = f"/{p.total_s:g}" if p.total_s else ""
        line = (f"[{p.elapsed_s:6.1f}{total} s] sent {p.sent:,}  ok {p.ok:,}  rps {p.rps:,.0f}  "
                f"errors {p.errors:,}  p99 {p.p99_ms:.1f} ms")
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
            self._drawn = True
        elif round(p.elapsed_s) % 5 == 0:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def render(r: LoadResult) -> str:
    """The human-readable report: a summary table, latency, then the breakdowns."""
    shape = (f"open loop {r.rate:g} rps" if r.mode == "open"
             else f"closed loop x{r.concurrency}")
    summary = [
        ("target", r.url), ("mode", shape + (" (stopped early)" if r.stopped_early else "")),
        ("client", f"{r.transport} on {r.event_loop}"),
        ("elapsed", f"{r.elapsed_s:.2f} s"), ("sent", r.sent), ("responses", r.responses),
        ("2xx", r.ok), ("errors (no response)", r.errors), ("achieved rps", f"{r.achieved_rps:,.1f}"),
    ]
    if r.mode == "open":
        summary += [("late sends", r.late), ("not sent", r.not_sent),
                    ("max send lag", f"{r.max_dispatch_lag_ms:.2f} ms")]
    if r.undecodable:
        summary.append(("undecodable 2xx bodies", r.undecodable))
    lat = r.latency_ms
    parts = [table(["run", ""], summary)]
    if r.responses:
        parts += ["", table(["latency", "p50", "p95", "p99", "p99.9", "max"],
                            [["ms", lat["p50"], lat["p95"], lat["p99"], lat["p99.9"], lat["max"]]])]
    for title, counts in (("status", r.by_status), ("routed_to", r.by_routed_to),
                          ("fallback_reason", r.by_fallback_reason), ("model_type", r.by_model_type),
                          ("model_version", r.by_model_version), ("error", r.by_error)):
        if counts:
            rows = sorted(counts.items(), key=lambda kv: -kv[1])
            total = sum(counts.values())
            parts += ["", table([title, "count", "share"],
                                [[k, v, f"{100.0 * v / total:.1f} %"] for k, v in rows])]
    return "\n".join(parts)
