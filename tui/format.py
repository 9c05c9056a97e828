"""Turning API answers into short operator-readable text (pure functions, no widgets).

Times are shown in UTC so what one operator reads matches the ledger files and other consoles.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.text import Text

from tui.state import as_float, pick

LEVEL_STYLES = {"none": "green", "ok": "green", "monitor": "yellow", "retrain": "bold red"}
ACK_STYLES = {"ack": "green", "nack": "bold red", "pending": "yellow"}


def pct(value: Any, digits: int = 0) -> str:
    f = as_float(value)
    return "-" if f is None else f"{f * 100:.{digits}f}%"


def num(value: Any, digits: int = 2) -> str:
    f = as_float(value)
    if f is None:
        return "-"
    if f != 0 and abs(f) < 10 ** -digits:
        return f"{f:.1e}"
    return f"{f:.{digits}f}"


def clock(ts: Any) -> str:
    """Epoch seconds (or ms) -> HH:MM:SS UTC; '-' when absent."""
    f = as_float(ts)
    if f is None:
        return "-" if ts in (None, "") else str(ts)[11:19] or str(ts)
    if f > 1e11:  # milliseconds (MLflow timestamps)
        f /= 1000
    return time.strftime("%H:%M:%S", time.gmtime(f))


def date_time(ts: Any) -> str:
    """Epoch seconds (or ms) or an ISO string -> 'YYYY-MM-DD HH:MM' UTC."""
    f = as_float(ts)
    if f is None:
        return "-" if ts in (None, "") else str(ts).replace("T", " ")[:16]
    if f > 1e11:
        f /= 1000
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(f))


def acked_word(acked: Any) -> str:
    return {True: "ack", False: "nack"}.get(acked, "pending")


def ack_text(acked: Any) -> Text:
    word = acked_word(acked)
    return Text(word, style=ACK_STYLES[word])


def node_states(nodes: Any) -> str:
    """{node: ack|nack|pending} -> 'edge=ack sidecar-xgboost=pending'."""
    if not isinstance(nodes, dict) or not nodes:
        return "no Envoy connected"
    return " ".join(f"{n}={s}" for n, s in sorted(nodes.items()))


def level_text(level: Any) -> Text:
    word = str(level or "-")
    return Text(word, style=LEVEL_STYLES.get(word, ""))


def decision_line(d: dict[str, Any]) -> str:
    """'#14 operator set_weights -> xDS v13 ack'."""
    version = d.get("xds_version")
    tail = f" -> xDS v{version} {acked_word(d.get('acked'))}" if version else ""
    return f"#{d.get('seq', '?')} {d.get('actor', '?')} {d.get('action', '?')}{tail}"


def describe_result(data: Any) -> str:
    """What an action's answer means, in one line: the decision, request id, run id or status."""
    if not isinstance(data, dict):
        return "done" if data is None else _compact(data)
    decision = data.get("decision")
    if isinstance(decision, dict):
        nodes = data.get("nodes", decision.get("nodes"))
        status = data.get("status")
        head = f"{status}: " if status else ""
        return f"{head}decision {decision_line(decision)} ({node_states(nodes)})"
    if "request_id" in data:
        return f"accepted: request {data['request_id']}"
    if "run_id" in data:
        return f"started: chaos run {data['run_id']}"
    if "running" in data:
        running = bool(data.get("running"))
        rate = pick(data, "rate")
        sent = pick(data, "sent")
        state = f"load running at {num(rate, 0)} rps" if running else "load stopped"
        return state + (f", sent {sent}" if sent is not None else "")
    if "status" in data:
        return str(data["status"])
    return _compact(data)


def _compact(data: Any, limit: int = 160) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def verdict_text(item: Any) -> Text:
    """A canary or chaos verdict (string or {verdict, reason}) coloured by outcome."""
    if isinstance(item, dict):
        word = str(pick(item, "verdict", "result", "status", default="?"))
        reason = pick(item, "reason", "detail", default="")
    else:
        word, reason = str(item), ""
    style = {"pass": "green", "passed": "green", "ok": "green", "succeeded": "green",
             "fail": "bold red", "failed": "bold red", "deviated": "bold red",
             "wait": "yellow", "running": "yellow"}.get(word.lower(), "")
    text = Text(word, style=style)
    if reason:
        text.append(f" {reason}", style="dim")
    return text
