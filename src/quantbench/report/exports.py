"""Exports are views of the store: JSON (one object per cell, raw samples kept) and flat CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path


def flat_rows(records: list[dict]) -> list[dict]:
    """One flat row per cell: every column's fields of the spec (report/columns.py)."""
    from quantbench.report.columns import flat_row

    return [flat_row(r) for r in records]


def to_json(records: list[dict]) -> str:
    return json.dumps(records, indent=2, default=str)


def to_csv(records: list[dict]) -> str:
    rows = flat_rows(records)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def to_jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, default=str) + "\n" for r in records)


def to_markdown(records: list[dict]) -> str:
    from quantbench.report.generations import to_markdown as generations_markdown
    from quantbench.config import repetitions_text
    from quantbench.report.markdown import LEGEND, lm_eval_markdown, results_table, summary
    from quantbench.report.sweep import by_comparison, crossover_lines
    from quantbench.report.table import runtimes

    if not records:
        return ""
    head = records[0]
    comparisons = by_comparison(records)
    if len(comparisons) > 1:
        lines = [f"## quantbench sweep {head['run_id']}", "",
                 f"{len(comparisons)} comparisons, each scheme against the baseline of its own "
                 f"model, runtime, workload and device; {repetitions_text(head['repetitions'])}.", ""]
        for label, members in comparisons:
            lines += [f"### {label}", "", results_table(members), ""]
            lines += [f"- {line}" for line in summary(members)] + [""]
        lines += ["### Crossovers", ""] + ([f"- {line}" for line in crossover_lines(records)] or [
            "- none: no axis varies between comparisons of the same scheme"])
        lines += ["", f"Speedup marks: {LEGEND}."]
    else:
        w = head["workload"]
        lines = [f"## quantbench run {head['run_id']}", "",
                 f"Model: {head['model']} ({head['model_label']}); device {head['device']}; runtime "
                 f"{runtimes(records)}; batch {w['batch_size']}, {w['prompt_tokens']} prompt + "
                 f"{w['new_tokens']} new tokens; {repetitions_text(head['repetitions'])}.", "",
                 results_table(records), "", f"Speedup marks: {LEGEND}.", ""]
        lines += [f"- {line}" for line in summary(records)]
    for section in (lm_eval_markdown(records), generations_markdown(records)):
        if section:
            lines += ["", section]
    return "\n".join(lines) + "\n"


def _sql_literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value) if value == value else "NULL"  # NaN has no SQL literal
    return "'" + str(value).replace("'", "''") + "'"


def to_sql(records: list[dict]) -> str:
    """Statements that load into sqlite3 (as llama-bench's -o sql): the CSV's columns in a
    `quantbench` table, and every raw sample in `quantbench_samples`."""
    rows = flat_rows(records)
    if not rows:
        return ""
    columns = list(rows[0])
    def sql_type(column: str) -> str:
        values = [r[column] for r in rows if r[column] is not None]
        if values and all(isinstance(v, (bool, int)) for v in values):
            return "INTEGER"
        if values and all(isinstance(v, (bool, int, float)) for v in values):
            return "REAL"
        return "TEXT"

    types = {c: sql_type(c) for c in columns}
    out = ["CREATE TABLE IF NOT EXISTS quantbench (\n  "
           + ",\n  ".join(f"{c} {types[c]}" for c in columns) + "\n);"]
    for row in rows:
        out.append(f"INSERT INTO quantbench ({', '.join(columns)}) VALUES ("
                   + ", ".join(_sql_literal(row[c]) for c in columns) + ");")
    out.append("CREATE TABLE IF NOT EXISTS quantbench_samples (\n  run_id TEXT, cell_id TEXT, "
               "scheme TEXT, metric TEXT, idx INTEGER, value REAL\n);")
    for r in records:
        for metric, summary in r["metrics"].items():
            for i, value in enumerate(summary["samples"]):
                out.append("INSERT INTO quantbench_samples VALUES ("
                           + ", ".join(_sql_literal(v) for v in (r["run_id"], r["cell_id"],
                                                                  r["scheme"], metric, i, value))
                           + ");")
    return "\n".join(out) + "\n"


FORMATS = {"json": to_json, "csv": to_csv, "jsonl": to_jsonl, "md": to_markdown, "sql": to_sql}


def write_new(path: Path, text: str) -> None:
    """Write a file that must not exist yet: nothing earlier is ever overwritten."""
    with open(path, "x") as fh:
        fh.write(text)


def write_run_files(records: list[dict], out: str, run_id: str) -> list[str]:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in ("json", "csv"):
        path = folder / f"{run_id}.{fmt}"
        write_new(path, FORMATS[fmt](records))
        written.append(str(path))
    return written
