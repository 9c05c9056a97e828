"""`meshctl score FILE.csv|FILE.jsonl`: batch-score a file of transactions through the edge.

    meshctl score txns.csv                      # -> txns.scored.csv, summary table
    meshctl score txns.jsonl --out out.jsonl --batch-size 1000 --json

Rows go to `POST /api/v1/predict/batch` in batches (at most 1,000 per batch, the endpoint's
limit). Every input row comes out, in order, with its prediction or its own error; a bad row
never stops the run. Exit codes: 0 = run finished (whatever each row's outcome), 1 = refused
(missing file, unknown format, missing feature columns, bad --batch-size or --url),
3 = nothing answered at the target (start the mesh with `meshctl up`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from meshctl.output import emit_json, table

EXIT_UNREACHABLE = 3


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "score", help="score a CSV/JSONL file of transactions in batches through the mesh",
        description="Read transactions (CSV with a header of feature names, or JSONL with one object "
                    "per line), score them through POST /api/v1/predict/batch and write each row "
                    "with its prediction or per-row error.")
    p.add_argument("file", type=Path, help="input .csv or .jsonl file")
    p.add_argument("--out", type=Path, default=None,
                   help="output file (default: FILE.scored.csv / FILE.scored.jsonl next to the input)")
    p.add_argument("--url", default=None,
                   help="batch endpoint (default: the edge, "
                        "http://127.0.0.1:<edge port>/api/v1/predict/batch)")
    p.add_argument("--batch-size", type=int, default=500, help="rows per request, 1-1000 (default 500)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-batch timeout in seconds (default 30)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a target that is not 127.0.0.1/localhost/::1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score the file; print the summary."""
    from data_plane.settings import Settings
    from meshctl import batch_score as bs

    if not 1 <= args.batch_size <= bs.MAX_BATCH:
        raise bs.ScoreInputError(f"--batch-size {args.batch_size} is out of range: give 1 to {bs.MAX_BATCH} "
                                 "(the batch endpoint's limit)")
    fmt = bs.input_format(args.file)
    out_path: Path = args.out or bs.default_output(args.file, fmt)
    out_fmt = "jsonl" if out_path.suffix.lower() in (".jsonl", ".ndjson") else \
        "csv" if out_path.suffix.lower() == ".csv" else fmt
    if out_path.resolve() == args.file.resolve():
        raise bs.ScoreInputError(f"--out {out_path} is the input file; choose another name")
    url = args.url or f"{Settings.from_env().edge_url}{bs.BATCH_PATH}"
    client = bs.BatchClient(url, timeout=args.timeout, allow_remote=args.allow_remote)
    total = bs.count_rows(args.file, fmt)
    columns, rows = bs.read_rows(args.file, fmt)
    bar = None if args.no_progress else ProgressBar(sys.stderr, total)
    try:
        with out_path.open("w", newline="", encoding="utf-8") as out:
            summary = bs.score_rows(rows, client, bs.writer_for(out, out_fmt, columns),
                                    batch_size=args.batch_size, progress=bar)
    except bs.ScoreTargetUnreachable as exc:
        out_path.unlink(missing_ok=True)
        print(f"meshctl score: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        client.close()
        if bar:
            bar.finish()
    report = {**summary.to_dict(), "input": str(args.file), "output": str(out_path), "url": url}
    if args.json:
        emit_json(report)
        return 0
    print(table(["", ""], [[k, report[k]] for k in ("input", "output", "rows", "scored", "failed",
                                                      "flagged_fraud", "fraud_rate", "batches",
                                                      "elapsed_s", "rows_per_s")]))
    if summary.by_version:
        print("\n" + table(["model_version", "rows"], sorted(summary.by_version.items())))
    if summary.by_error:
        print("\n" + table(["error rule", "rows"], sorted(summary.by_error.items())))
    return 0


class ProgressBar:
    """A bar redrawn in place on a terminal; a plain line per 10 % otherwise."""

    WIDTH = 30

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream, self.total = stream, max(total, 1)
        self.tty = stream.isatty()
        self._last_decile = -1

    def __call__(self, done: int) -> None:
        frac = min(done / self.total, 1.0)
        filled = int(frac * self.WIDTH)
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done:,}/{self.total:,} rows {frac:5.1%}"
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        elif int(frac * 10) != self._last_decile:
            self._last_decile = int(frac * 10)
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
