"""One column spec behind every view of a run: the terminal table, Markdown, HTML and CSV/SQL.

A column is what a reader sees (a header and a text per record) and what a spreadsheet gets
(raw fields, unrounded). Adding a metric is one `Column` in `COLUMNS`; every view picks it up:
the terminal shows the `brief` ones, Markdown and HTML show every column with a header, CSV
and SQL get every column's fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from quantbench.measure.contention import contention_flag
from quantbench.report.markdown import (contention_note, kl_text, median_ci_text, ppl_text,
                                        roofline_text, runs_text, speedup_text, tables_text,
                                        top1_text)


def _always(records: list) -> bool:
    return True


@dataclass(frozen=True)
class Column:
    name: str                                   # what it holds (tests and code refer to it)
    header: str | None = None                   # None: a CSV-only column
    text: Callable[[dict], str] | None = None   # an ok record -> the text a table shows
    fields: Callable[[dict], dict[str, Any]] | None = None  # any record -> raw CSV fields
    brief: bool = False                         # shown in the terminal table too
    when: Callable[[list], bool] = _always      # shown in tables only when this holds
    failed_too: bool = False                    # text called for failed records as well
    metric: tuple[str, str] | None = None       # (timed metric, short name): `compare` pairs it


METRIC_STATS = ("n", "median", "mean", "std", "cv", "min", "max", "p90")


def _metric_fields(metric: str) -> Callable[[dict], dict]:
    """A timing metric's summary, each interval named for what it bounds: the mean's t-interval,
    the median's order-statistic interval with its exact coverage."""
    def fields(r: dict) -> dict:
        s = r["metrics"].get(metric)
        out = {f"{metric}_{stat}": s[stat] if s else None for stat in METRIC_STATS}
        out[f"{metric}_mean_ci95_low"], out[f"{metric}_mean_ci95_high"] = (s["ci95"] if s else (None, None))
        out[f"{metric}_median_ci_low"], out[f"{metric}_median_ci_high"] = (
            s["median_ci"] if s else (None, None))
        out[f"{metric}_median_ci_coverage"] = s["median_ci_level"] if s else None
        return out
    return fields


def _identity(r: dict) -> dict:
    w = r["workload"]
    return {"run_id": r["run_id"], "cell_id": r["cell_id"], "model": r["model"],
            "random_weights": r["random_weights"], "scheme": r["scheme"], "baseline": r["baseline"],
            "runtime": r["runtime"], "device": r["device"], "batch_size": w["batch_size"],
            "prompt_tokens": w["prompt_tokens"], "new_tokens": w["new_tokens"],
            "warmup": r["repetitions"]["warmup"], "runs": r["repetitions"]["runs"],
            "comparison": r.get("comparison")}


def _status_text(r: dict) -> str:
    if r["status"] != "ok":
        return f"failed: {r['error']}"
    note = contention_note(r)
    return "ok" + (" (reused)" if r["reused"] else "") + (f" ({note})" if note else "")


def _status(r: dict) -> dict:
    return {"status": r["status"], "error": r["error"], "reused": r["reused"],
            "role": r.get("role", "measure"), "env_key": r.get("env_key"),
            "measured_in_run": r.get("measured_in_run"), "run_state": r.get("run_state")}


def _contention(r: dict) -> dict:
    load = r["info"].get("contention") or {}
    pids = load.get("gpu_other_pids")
    return {"contended": bool(contention_flag(r["info"])) if load or r["info"].get("shared") else None,
            "contention_reason": contention_flag(r["info"]),
            "other_cpu_cores": load.get("other_cpu_cores"),
            "gpu_other_pids": " ".join(map(str, pids)) if pids is not None else None}


def _speedup(r: dict) -> dict:
    versus = r.get("vs_baseline") or {}
    speed = versus.get("decode_speedup") or {}
    low, high = speed.get("ci95") or (None, None)
    verdict = speed.get("verdict") or (
        "baseline drift: " + versus["baseline_drift"]["verdict"] if versus.get("baseline_drift")
        else ("not comparable" if versus.get("not_comparable") else None))
    return {"speed_reference": versus.get("speed_reference") or versus.get("baseline_scheme"),
            "decode_speedup": speed.get("ratio"), "decode_speedup_ci95_low": low,
            "decode_speedup_ci95_high": high, "decode_speedup_verdict": verdict,
            "equivalence_threshold": speed.get("threshold"), "noise_floor": versus.get("noise_floor"),
            "same_environment": versus.get("same_environment")}


def _runs(r: dict) -> dict:
    stop, warm = r["info"].get("timed_runs") or {}, r["info"].get("warmup") or {}
    return {"runs_done": stop.get("runs"), "runs_stop_reason": stop.get("reason"),
            "warmups_done": warm.get("done"), "warmup_steady": warm.get("steady"),
            "timed_trend_p": (stop.get("trend") or {}).get("p")}


MEMORY_FIELDS = ("weights_bytes", "peak_bytes", "peak_scope", "peak_rss_bytes", "peak_allocated_bytes",
                 "peak_reserved_bytes", "nvml_used_bytes", "rss_anon_after_load_bytes",
                 "rss_file_after_load_bytes", "rss_data_file_after_load_bytes")


def _mb(value) -> str:
    return f"{value / 1e6:,.1f}" if value else "-"


def _tables(r: dict) -> dict:
    tables = r["info"].get("tables") or {}
    out = {}
    for part in ("embedding", "lm_head"):
        out[f"{part}_dtype"] = (tables.get(part) or {}).get("dtype")
        out[f"{part}_bytes"] = (tables.get(part) or {}).get("bytes")
    return out


def _reduction_text(r: dict) -> str:
    value = (r.get("vs_baseline") or {}).get("weights_reduction_pct")
    return f"{value:.1f}%" if value is not None and not r["baseline"] else "-"


def _reductions(r: dict) -> dict:
    versus = r.get("vs_baseline") or {}
    return {"weights_reduction_pct": versus.get("weights_reduction_pct"),
            "peak_reduction_pct": versus.get("peak_reduction_pct")}


QUALITY_FIELDS = ("ppl", "ppl_ratio", "baseline_ppl", "kl_mean", "kl_se", "kl_median", "kl_p99",
                  "kl_max", "top1_agreement_pct", "rms_dp_pct", "tokens_scored", "context", "stride")


def _quality(r: dict) -> dict:
    q = r.get("quality") or {}
    out = {key: q.get(key) for key in QUALITY_FIELDS}
    out["ppl_ci95_low"], out["ppl_ci95_high"] = q.get("ppl_ci95") or (None, None)
    out["quality_error"] = q.get("error")
    return out


def _bits_text(r: dict) -> str:
    bits = r.get("bits_per_weight") or {}
    if "model" not in bits:
        return "-"
    layers = f" ({bits['layers']:.2f})" if "layers" in bits else ""
    return f"{bits['model']:.2f}{layers}" + (" !" if bits.get("container_note") else "")


def _bits(r: dict) -> dict:
    bits = r.get("bits_per_weight") or {}
    return {"bits_per_weight": bits.get("model"), "layers_bits_per_weight": bits.get("layers")}


def _has_quality(records: list) -> bool:
    return any(r.get("quality") for r in records)


def _roofline(r: dict) -> dict:
    roof = r.get("roofline") or {}
    return {"bytes_per_token": roof.get("bytes_per_token"), "roofline_pct": roof.get("achieved_pct"),
            "roofline_bandwidth_source": roof.get("bandwidth_source"),
            "prefill_roofline_pct": roof.get("prefill_achieved_pct"),
            "prefill_compute_source": roof.get("compute_source")}


def _compiled(r: dict) -> dict:
    return r["info"].get("compiled") or {}


def _compile_text(r: dict) -> str:
    seconds = (_compiled(r).get("compile") or {}).get("seconds")
    return f"{seconds:,.0f}" if seconds is not None else "-"


def _compile(r: dict) -> dict:
    compiled = _compiled(r)
    graph = compiled.get("cuda_graph") or {}
    return {"cuda_graph": graph.get("captured") if compiled else None,
            "cuda_graph_reason": graph.get("reason"),
            "compile_s": (compiled.get("compile") or {}).get("seconds"),
            "kernels_per_token": (compiled.get("profile") or {}).get("kernels_per_token")}


def _any_compiled(records: list) -> bool:
    return any((_compiled(r).get("compile") or {}).get("seconds") is not None for r in records)


def _calibration(r: dict) -> dict:
    return r["info"].get("calibration") or {}


def _calibration_text(r: dict) -> str:
    seconds = _calibration(r).get("seconds")
    return f"{seconds:,.0f}" if seconds is not None else "-"


def _calibration_fields(r: dict) -> dict:
    c = _calibration(r)
    return {"calibration_method": c.get("method"), "calibration_s": c.get("seconds"),
            "calibration_source": c.get("source"), "calibration_sha256": c.get("sha256"),
            "calibration_samples": c.get("samples"), "calibration_length": c.get("length")}


def _any_calibrated(records: list) -> bool:
    return any(_calibration(r) for r in records)


def _kv(r: dict) -> dict:
    return r["info"].get("kv_cache") or {}


def _kv_text(r: dict) -> str:
    held = _kv(r).get("stored_bytes")
    return _mb(held) if held else "-"


def _kv_fields(r: dict) -> dict:
    kv = _kv(r)
    return {"kv_format": kv.get("format"), "kv_stored_bytes": kv.get("stored_bytes"),
            "kv_positions": kv.get("positions"),
            "kv_bytes_per_position": r["info"].get("kv_bytes_per_position")}


def _any_kv_format(records: list) -> bool:
    return any(_kv(r).get("format") not in (None, "auto") for r in records)


def _ttft(r: dict) -> str:
    m = r["metrics"]
    return f"{m['ttft_ms']['median']:.1f}" if "ttft_ms" in m else "-"


def _prefill(r: dict) -> str:
    m = r["metrics"]
    return f"{m['prefill_tok_s']['median']:,.0f}" if "prefill_tok_s" in m else "-"


def _load(r: dict) -> dict:
    return {"load_s": r["info"].get("load_s"), "quantize_s": r["info"].get("quantize_s"),
            "parameters": r["info"].get("parameters"),
            "scheme_settings": json.dumps(r["scheme_settings"], sort_keys=True)}


# In the order read: what was measured, speed, then memory, then quality, then the ceiling.
COLUMNS = [
    Column("identity", fields=_identity),
    Column("status", "status", _status_text, _status, failed_too=True),
    Column("contention", fields=_contention),
    Column("decode", "decode tok/s median [CI]", lambda r: median_ci_text(r["metrics"].get("decode_tok_s")),
           _metric_fields("decode_tok_s"), brief=True, metric=("decode_tok_s", "decode tok/s")),
    Column("speedup", "speedup [95% CI]", speedup_text, _speedup, brief=True),
    Column("runs", "runs + warm-ups", runs_text, _runs),
    Column("ttft", "TTFT ms", _ttft, _metric_fields("ttft_ms"), brief=True,
           metric=("ttft_ms", "TTFT ms")),
    Column("prefill", "prefill tok/s", _prefill, _metric_fields("prefill_tok_s"),
           metric=("prefill_tok_s", "prefill tok/s")),
    Column("e2e", fields=_metric_fields("e2e_tok_s")),
    Column("decode_ms", fields=_metric_fields("decode_ms_per_token")),
    Column("weights", "weights MB", lambda r: _mb(r["memory"].get("weights_bytes")),
           lambda r: {key: r["memory"].get(key) for key in MEMORY_FIELDS}, brief=True),
    Column("lm_head", "lm_head", tables_text, _tables),
    Column("peak", "peak MB", lambda r: _mb(r["memory"].get("peak_bytes")), brief=True),
    Column("reduction", "weights -%", _reduction_text, _reductions, brief=True),
    Column("bits", "bits/weight (layers)", _bits_text, _bits, brief=True),
    Column("kv", "KV cache MB", _kv_text, _kv_fields, brief=True, when=_any_kv_format),
    Column("ppl", "PPL [95% CI]", ppl_text, brief=True, when=_has_quality),
    Column("kl", "KL ± SE", kl_text, _quality, brief=True, when=_has_quality),
    Column("top1", "top-1 %", top1_text, when=_has_quality),
    Column("roofline", "% roofline", roofline_text, _roofline, brief=True),
    Column("compile", "compile s", _compile_text, _compile, brief=True, when=_any_compiled),
    Column("calibration", "calibrate s", _calibration_text, _calibration_fields, brief=True,
           when=_any_calibrated),
    Column("load", fields=_load),
]


def shown(records: list[dict], brief: bool = False) -> list[Column]:
    """The columns a table of these records shows (the terminal's brief set, or all)."""
    return [c for c in COLUMNS if c.header and (c.brief or not brief) and c.when(records)]


def timed_metrics() -> list[tuple[str, str]]:
    """(metric, short name) of every column that summarises timed samples: what `compare`
    sets side by side with a ratio and its interval."""
    return [c.metric for c in COLUMNS if c.metric]


def cell_text(column: Column, record: dict) -> str:
    if record["status"] != "ok" and not column.failed_too:
        return "-"
    return column.text(record)


def flat_row(record: dict) -> dict:
    row = {}
    for column in COLUMNS:
        if column.fields:
            row.update(column.fields(record))
    return row
