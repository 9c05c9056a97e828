"""Score a file of transactions through `POST /api/v1/predict/batch` (`meshctl score`).

Input: CSV (the header names the columns; the 11 feature columns are required, `card_id` is
optional, any other column is carried to the output but not sent) or JSONL (one object per
line, same rule for keys). Values are sent as the schema wants them: integer features as JSON
integers when the text is integral, float features as floats; text that is not a number is sent
as-is so the server's per-field validation names the problem for that row.

Output: every input row, in order, with `status`, `fraud_probability`, `is_fraud`,
`model_version`, `routed_to`, `fallback_reason` and `error` (the server's per-item error, or why
the whole batch was not scored). A bad row never stops the run.
"""

from __future__ import annotations

import csv
import http.client
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from data_plane.contracts.errors import MeshError
from data_plane.contracts.schema import FEATURES
from data_plane.load.targets import check_target

MAX_BATCH = 1000  # the server's documented maximum (model_servers/predict.py MAX_BATCH)
BATCH_PATH = "/api/v1/predict/batch"
RESULT_COLUMNS = ("status", "fraud_probability", "is_fraud", "model_version", "routed_to",
                  "fallback_reason", "error")
_SENT_KEYS = {f.name: f for f in FEATURES}
CARD_ID = "card_id"
_RETRY_STATUSES = {502, 503, 504}


class ScoreInputError(MeshError):
    """The input file cannot be read as transactions (missing, wrong format, no header)."""


class ScoreTargetUnreachable(MeshError):
    """Nothing answered at the scoring URL."""


@dataclass
class Row:
    """One input row: what goes to the output (`original`) and what is sent (`payload`), or why
    it could not even be sent (`local_error`, e.g. a JSONL line that is not JSON)."""

    original: dict[str, Any]
    payload: dict[str, Any] | None
    local_error: dict[str, Any] | None = None


@dataclass
class ScoreSummary:
    rows: int = 0
    scored: int = 0
    failed: int = 0
    flagged: int = 0
    batches: int = 0
    elapsed_s: float = 0.0
    by_version: Counter[str] = field(default_factory=Counter)
    by_error: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "scored": self.scored, "failed": self.failed,
                "flagged_fraud": self.flagged,
                "fraud_rate": round(self.flagged / self.scored, 6) if self.scored else None,
                "batches": self.batches, "elapsed_s": round(self.elapsed_s, 3),
                "rows_per_s": round(self.rows / self.elapsed_s, 1) if self.elapsed_s > 0 else None,
                "by_model_version": dict(self.by_version), "errors_by_rule": dict(self.by_error)}


# ---- input ---------------------------------------------------------------------------------------
def input_format(path: Path) -> str:
    """`csv` or `jsonl` from the file name; a clear error for anything else or a missing file."""
    if not path.is_file():
        raise ScoreInputError(f"{path}: no such file (give a .csv or .jsonl file of transactions)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise ScoreInputError(f"{path}: unknown format {suffix or '(no extension)'!r}; use .csv "
                          "(header = feature names) or .jsonl (one JSON object per line)")


def count_rows(path: Path, fmt: str) -> int:
    """Rows in the file (for the progress bar): non-blank lines, less the CSV header."""
    with path.open("rb") as fh:
        n = sum(1 for line in fh if line.strip())
    return max(0, n - 1) if fmt == "csv" else n


def read_rows(path: Path, fmt: str) -> tuple[list[str], Iterator[Row]]:
    """The input columns (CSV header; for JSONL, the features) and a row iterator."""
    if fmt == "csv":
        return _read_csv(path)
    return [f.name for f in FEATURES], _read_jsonl(path)


def _read_csv(path: Path) -> tuple[list[str], Iterator[Row]]:
    fh = path.open(newline="", encoding="utf-8-sig")
    try:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
    except (UnicodeDecodeError, csv.Error) as exc:
        fh.close()
        raise ScoreInputError(f"{path}: not a readable CSV file ({exc})") from None
    if not header:
        fh.close()
        raise ScoreInputError(f"{path}: empty file; the first line must be a header of feature names")
    missing = [name for name in _SENT_KEYS if name not in header]
    if missing:
        fh.close()
        raise ScoreInputError(f"{path}: the header lacks required feature column(s) {', '.join(missing)} "
                              f"(header: {', '.join(header)})")

    def rows() -> Iterator[Row]:
        with fh:
            try:
                for raw in reader:
                    original = {k: v for k, v in raw.items() if k is not None}
                    if None in raw:  # more cells than header columns: a real format error
                        yield Row(original, None, _local_error("$row", "extra_cells",
                                                               "the row has more cells than the header"))
                        continue
                    yield Row(original, _payload(original))
            except (UnicodeDecodeError, csv.Error) as exc:
                raise ScoreInputError(f"{path}: line {reader.line_num}: unreadable CSV ({exc})") from None

    return list(header), rows()


def _read_jsonl(path: Path) -> Iterator[Row]:
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                yield Row({"_line": n}, None, _local_error("$line", "json", f"line {n} is not JSON ({exc})"))
                continue
            if not isinstance(obj, dict):
                yield Row({"_line": n}, None, _local_error("$line", "object",
                                                           f"line {n} is not a JSON object"))
                continue
            yield Row(obj, {k: v for k, v in obj.items() if k in _SENT_KEYS or k == CARD_ID})


def _local_error(field_name: str, rule: str, message: str) -> dict[str, Any]:
    return {"error": "validation_error", "field": field_name, "rule": rule, "message": message}


def _payload(cells: dict[str, Any]) -> dict[str, Any]:
    """CSV text -> the JSON the schema wants; text that is not a number stays text (the server
    then names the field and rule for this row)."""
    out: dict[str, Any] = {}
    for name, spec in _SENT_KEYS.items():
        text = (cells.get(name) or "").strip()
        out[name] = _number(text, spec.kind) if text else None
    card = (cells.get(CARD_ID) or "").strip()
    if card:
        out[CARD_ID] = card
    return out


def _number(text: str, kind: type) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    if kind is int and value.is_integer():
        return int(value)
    return value


# ---- transport -----------------------------------------------------------------------------------
class BatchClient:
    """A keep-alive HTTP/1.1 client for the batch endpoint (one connection, sequential batches)."""

    def __init__(self, url: str, *, timeout: float = 30.0, allow_remote: bool = False) -> None:
        target = check_target(url, allow_remote=allow_remote)
        parts = urlsplit(target.url)
        self.url = target.url
        self.path = parts.path if parts.path not in ("", "/") else BATCH_PATH
        self._https = parts.scheme == "https"
        self._host, self._port, self._timeout = target.host, target.port, timeout
        self._conn: http.client.HTTPConnection | None = None

    def post(self, transactions: list[dict[str, Any]]) -> tuple[int, Any]:
        """(status, decoded body); status 0 = no answer (connection error/timeout)."""
        body = json.dumps({"transactions": transactions}, allow_nan=False).encode()
        for attempt in range(2):  # one reconnect: a keep-alive connection may have been closed
            try:
                conn = self._connection()
                conn.request("POST", self.path, body, {"content-type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self.close()
                try:
                    return resp.status, json.loads(raw) if raw else None
                except ValueError:
                    return resp.status, raw.decode(errors="replace")[:200]
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 1:
                    return 0, f"no answer from {self.url}: {exc}"
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# ---- scoring -------------------------------------------------------------------------------------
def score_rows(rows: Iterator[Row], client: BatchClient, write: Callable[[Row, dict[str, Any]], None],
               *, batch_size: int, progress: Callable[[int], None] | None = None) -> ScoreSummary:
    """Send `rows` in batches, call `write(row, result)` for each row in input order."""
    summary = ScoreSummary()
    started = time.monotonic()
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= batch_size:
            _send(batch, client, write, summary)
            batch = []
            if progress:
                progress(summary.rows)
    if batch:
        _send(batch, client, write, summary)
        if progress:
            progress(summary.rows)
    summary.elapsed_s = time.monotonic() - started
    return summary


def _send(batch: list[Row], client: BatchClient, write: Callable[[Row, dict[str, Any]], None],
          summary: ScoreSummary) -> None:
    sendable = [r for r in batch if r.payload is not None]
    results: list[dict[str, Any]] = []
    if sendable:
        summary.batches += 1
        status, body = client.post([r.payload for r in sendable])  # type: ignore[misc]
        if status in _RETRY_STATUSES:  # one retry: a failover or restart is usually over quickly
            time.sleep(0.5)
            status, body = client.post([r.payload for r in sendable])  # type: ignore[misc]
        if status == 0 and summary.scored == 0 and summary.batches == 1:
            raise ScoreTargetUnreachable(f"{body}. Is the mesh running? Start it with `meshctl up` "
                                         "(or check --url).")
        results = _item_results(status, body, len(sendable))
    answers = iter(results)
    for row in batch:
        result = next(answers) if row.payload is not None else {"status": 400, "error": row.local_error}
        _account(summary, result)
        write(row, result)


def _item_results(status: int, body: Any, n: int) -> list[dict[str, Any]]:
    if status == 200 and isinstance(body, dict) and isinstance(body.get("results"), list) \
            and len(body["results"]) == n:
        return [_flatten(item) for item in body["results"]]
    if isinstance(body, dict) and body.get("model_type") == "conservative_default":
        why = "no model answered: the edge returned its conservative default for the whole batch"
    elif isinstance(body, dict):
        why = body.get("message") or body.get("error") or json.dumps(body)[:200]
    else:
        why = str(body)
    err = {"error": "batch_failed", "field": "$batch", "rule": f"http_{status}" if status else "no_answer",
           "message": str(why)}
    return [{"status": status or None, "error": err} for _ in range(n)]


def _flatten(item: dict[str, Any]) -> dict[str, Any]:
    pred = item.get("prediction")
    if isinstance(pred, dict):
        return {"status": item.get("status", 200), **{k: pred.get(k) for k in RESULT_COLUMNS[1:6]}}
    return {"status": item.get("status"), "error": item.get("error")}


def _account(summary: ScoreSummary, result: dict[str, Any]) -> None:
    summary.rows += 1
    if result.get("error") is None:
        summary.scored += 1
        summary.flagged += bool(result.get("is_fraud"))
        summary.by_version[str(result.get("model_version"))] += 1
    else:
        summary.failed += 1
        err = result["error"]
        summary.by_error[str(err.get("rule") if isinstance(err, dict) else err)] += 1


# ---- output --------------------------------------------------------------------------------------
def default_output(path: Path, fmt: str) -> Path:
    """FILE.scored.csv / FILE.scored.jsonl next to the input."""
    return path.with_name(f"{path.stem}.scored.{'csv' if fmt == 'csv' else 'jsonl'}")


def writer_for(out: TextIO, fmt: str, columns: list[str]) -> Callable[[Row, dict[str, Any]], None]:
    """A `write(row, result)` for the output format (CSV: input columns then result columns)."""
    if fmt == "jsonl":
        def write_jsonl(row: Row, result: dict[str, Any]) -> None:
            out.write(json.dumps({**row.original, **result}, default=str) + "\n")
        return write_jsonl

    w = csv.writer(out)
    w.writerow([*columns, *RESULT_COLUMNS])

    def write_csv(row: Row, result: dict[str, Any]) -> None:
        err = result.get("error")
        if isinstance(err, dict):
            err = f"{err.get('field')}: {err.get('rule')}: {err.get('message')}"
        cells = [row.original.get(c, "") for c in columns]
        cells += [_cell(result.get(c)) for c in RESULT_COLUMNS[:-1]] + [_cell(err)]
        w.writerow(cells)
    return write_csv


def _cell(v: Any) -> Any:
    return "" if v is None else v
