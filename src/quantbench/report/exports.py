"""Exports are views of the store: JSON (one object per cell, raw samples kept) and flat CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from quantbench.measure.contention import contention_flag

CSV_METRICS = ("decode_tok_s", "prefill_tok_s", "ttft_ms", "e2e_tok_s", "decode_ms_per_token")
CSV_STATS = ("n", "median", "mean", "std", "cv", "min", "max", "p90")
CSV_MEMORY = ("weights_bytes", "peak_bytes", "peak_scope", "peak_rss_bytes", "peak_allocated_bytes",
              "peak_reserved_bytes", "nvml_used_bytes", "rss_anon_after_load_bytes",
              "rss_file_after_load_bytes", "rss_data_file_after_load_bytes")

QUALITY_FIELDS = ("ppl", "ppl_ratio", "baseline_ppl", "kl_mean", "kl_se", "kl_median", "kl_p99",
                  "kl_max", "top1_agreement_pct", "rms_dp_pct", "tokens_scored", "context", "stride")


def flat_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        row = {
            "run_id": r["run_id"], "cell_id": r["cell_id"], "model": r["model"],
            "random_weights": r["random_weights"], "scheme": r["scheme"],
            "baseline": r["baseline"], "runtime": r["runtime"], "device": r["device"],
            "batch_size": r["workload"]["batch_size"],
            "prompt_tokens": r["workload"]["prompt_tokens"],
            "new_tokens": r["workload"]["new_tokens"], "warmup": r["repetitions"]["warmup"],
            "runs": r["repetitions"]["runs"], "status": r["status"], "error": r["error"],
            "reused": r["reused"], "role": r.get("role", "measure"), "env_key": r.get("env_key"),
            "measured_in_run": r.get("measured_in_run"), "run_state": r.get("run_state"),
        }
        load = r["info"].get("contention") or {}
        row["contended"] = bool(contention_flag(r["info"])) if load or r["info"].get("shared") else None
        row["contention_reason"] = contention_flag(r["info"])
        row["other_cpu_cores"] = load.get("other_cpu_cores")
        row["gpu_other_pids"] = (" ".join(map(str, load["gpu_other_pids"]))
                                 if load.get("gpu_other_pids") is not None else None)
        stop, warm = r["info"].get("timed_runs") or {}, r["info"].get("warmup") or {}
        row["runs_done"] = stop.get("runs")
        row["runs_stop_reason"] = stop.get("reason")
        row["warmups_done"] = warm.get("done")
        row["warmup_steady"] = warm.get("steady")
        row["timed_trend_p"] = (stop.get("trend") or {}).get("p")
        for metric in CSV_METRICS:
            summary = r["metrics"].get(metric)
            for stat in CSV_STATS:
                row[f"{metric}_{stat}"] = summary[stat] if summary else None
            # Each interval named for what it bounds: the mean's t-interval, the median's
            # order-statistic interval with its exact coverage.
            row[f"{metric}_mean_ci95_low"] = summary["ci95"][0] if summary else None
            row[f"{metric}_mean_ci95_high"] = summary["ci95"][1] if summary else None
            row[f"{metric}_median_ci_low"] = summary["median_ci"][0] if summary else None
            row[f"{metric}_median_ci_high"] = summary["median_ci"][1] if summary else None
            row[f"{metric}_median_ci_coverage"] = summary["median_ci_level"] if summary else None
        for key in CSV_MEMORY:
            row[key] = r["memory"].get(key)
        row["load_s"] = r["info"].get("load_s")
        row["quantize_s"] = r["info"].get("quantize_s")
        row["parameters"] = r["info"].get("parameters")
        tables = r["info"].get("tables") or {}
        for part in ("embedding", "lm_head"):
            row[f"{part}_dtype"] = (tables.get(part) or {}).get("dtype")
            row[f"{part}_bytes"] = (tables.get(part) or {}).get("bytes")
        roof = r.get("roofline") or {}
        row["bytes_per_token"] = roof.get("bytes_per_token")
        row["roofline_pct"] = roof.get("achieved_pct")
        row["roofline_bandwidth_source"] = roof.get("bandwidth_source")
        row["prefill_roofline_pct"] = roof.get("prefill_achieved_pct")
        row["prefill_compute_source"] = roof.get("compute_source")
        versus = r.get("vs_baseline") or {}
        speed = versus.get("decode_speedup") or {}
        row["speed_reference"] = versus.get("speed_reference") or versus.get("baseline_scheme")
        row["decode_speedup"] = speed.get("ratio")
        row["decode_speedup_ci95_low"] = (speed.get("ci95") or [None, None])[0]
        row["decode_speedup_ci95_high"] = (speed.get("ci95") or [None, None])[1]
        row["decode_speedup_verdict"] = speed.get("verdict") or (
            "baseline drift: " + versus["baseline_drift"]["verdict"] if versus.get("baseline_drift")
            else ("not comparable" if versus.get("not_comparable") else None))
        row["equivalence_threshold"] = speed.get("threshold")
        row["noise_floor"] = versus.get("noise_floor")
        row["same_environment"] = versus.get("same_environment")
        row["weights_reduction_pct"] = versus.get("weights_reduction_pct")
        row["peak_reduction_pct"] = versus.get("peak_reduction_pct")
        q = r.get("quality") or {}
        for key in QUALITY_FIELDS:
            row[key] = q.get(key)
        row["ppl_ci95_low"], row["ppl_ci95_high"] = q.get("ppl_ci95") or (None, None)
        row["quality_error"] = q.get("error")
        compiled = r["info"].get("compiled") or {}
        graph = compiled.get("cuda_graph") or {}
        row["cuda_graph"] = graph.get("captured") if compiled else None
        row["cuda_graph_reason"] = graph.get("reason")
        row["compile_s"] = (compiled.get("compile") or {}).get("seconds")
        row["kernels_per_token"] = (compiled.get("profile") or {}).get("kernels_per_token")
        row["scheme_settings"] = json.dumps(r["scheme_settings"], sort_keys=True)
        rows.append(row)
    return rows


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
    from quantbench.report.table import runtimes

    if not records:
        return ""
    head = records[0]
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
