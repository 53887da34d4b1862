"""Turn stored cells into records: statistics from the raw samples, comparison to the baseline.

A record is what `export --format json` writes for one cell; tables and CSV are views of it.
"""

from __future__ import annotations

from quantbench.measure.stats import ratio_of_medians, summarize
from quantbench.models import RANDOM_LABEL

HEADLINE_METRICS = ("decode_tok_s", "prefill_tok_s", "ttft_ms", "e2e_tok_s",
                    "decode_ms_per_token", "token_latency_ms", "e2e_s")


def build_records(store, run_id: str) -> list[dict]:
    run = store.run(run_id)
    env = store.env(run["env_id"]) if run["env_id"] else {}
    cells = store.cells(run_id)
    records = [_record(run_id, cell, env) for cell in cells]
    base_cells = [c for c in cells if c["baseline"]]
    base = base_cells[0] if base_cells else None
    for record in records:
        record["roofline"] = roofline(record, env.get("hardware") or {})
    by_scheme = {c["scheme"]: c for c in cells}
    for record, cell in zip(records, cells):
        # Schemes with their own engine (GGUF) are timed against that engine's full-precision run.
        ref_name = (cell["config"].get("extra") or {}).get("speed_reference")
        record["vs_baseline"] = _versus(cell, base, by_scheme.get(ref_name, base))
    return records


def _record(run_id: str, cell: dict, env: dict) -> dict:
    config = cell["config"]
    model = config["model"]
    info = dict(cell["info"])
    quality = info.pop("quality", None)
    lm_eval = info.pop("lm_eval", None)
    return {
        "run_id": run_id,
        "cell_id": cell["cell_id"],
        "measured_in_run": cell["measured_in_run"],
        "reused": cell["reused"],
        "model": cell["model"],
        "model_spec": model["spec"],
        "model_label": RANDOM_LABEL if model["random_weights"] else model.get("note", ""),
        "random_weights": model["random_weights"],
        "scheme": cell["scheme"],
        "scheme_settings": config["scheme_settings"],
        "baseline": cell["baseline"],
        "runtime": cell["runtime"],
        "device": cell["device"],
        "workload": config["workload"],
        "repetitions": config["repetitions"],
        "prompt_source": config["prompt"]["source"],
        "status": cell["status"],
        "error": cell["error"],
        "metrics": {name: summarize(values).to_dict() for name, values in cell["samples"].items()},
        "memory": cell["memory"],
        "info": info,
        "unread_weight_bytes": (info["unread_weight_bytes"] if "unread_weight_bytes" in info
                                else _unread_from_config(config)),
        "quality": quality,
        "lm_eval": lm_eval,
        "started_at": cell["started_at"],
        "wall_s": cell["wall_s"],
        "env_id": cell["env_id"],
        "env": env,
    }


def _versus(cell: dict, base: dict | None, speed_ref: dict | None) -> dict | None:
    if base is None or cell["status"] != "ok" or base["status"] != "ok":
        return None
    out: dict = {"baseline_scheme": base["scheme"]}
    if speed_ref is not None and speed_ref is not base:
        out["speed_reference"] = speed_ref["scheme"]
    if speed_ref is not None and speed_ref["status"] == "ok":
        for metric, key in (("decode_tok_s", "decode_speedup"), ("e2e_tok_s", "e2e_speedup"),
                            ("prefill_tok_s", "prefill_speedup")):
            a, b = cell["samples"].get(metric), speed_ref["samples"].get(metric)
            if a and b:
                out[key] = ratio_of_medians(a, b)
    for mem_key, key in (("weights_bytes", "weights_reduction_pct"),
                         ("peak_bytes", "peak_reduction_pct")):
        a, b = cell["memory"].get(mem_key), base["memory"].get(mem_key)
        if a and b:
            out[key] = 100.0 * (1 - a / b)
    return out


def _unread_from_config(config: dict) -> int | None:
    """For cells measured before workers recorded it: an untied input embedding's bytes at the
    compute dtype (no scheme here quantizes embeddings; GGUF cells always recorded it). Read
    from the preset or config.json directly: importing transformers would cost every report."""
    import json
    from pathlib import Path

    from quantbench.presets import PRESETS

    model = config["model"]
    try:
        if model["kind"] == "random":
            hf = PRESETS[model["preset"]].config
        else:
            hf = json.loads((Path(model["path"]) / "config.json").read_text())
            hf = hf.get("text_config", hf)
        if "tie_word_embeddings" not in hf:  # its default differs by architecture
            return None
        if hf["tie_word_embeddings"]:
            return 0
        element = {"float32": 4}.get(config["scheme_settings"].get("compute_dtype"), 2)
        return int(hf["vocab_size"]) * int(hf["hidden_size"]) * element
    except (KeyError, OSError, ValueError, TypeError):
        return None


def roofline(record: dict, profile: dict) -> dict | None:
    """Decode against the memory ceiling, prefill against the compute ceiling.

    A decode step reads every weight once (shared by the batch; an untied input embedding only
    one row a token, so it is left out) and each sequence's KV cache;
    averaged over the decode, a sequence's cache holds prompt + new/2 positions. The ceiling is
    the measured copy bandwidth over those bytes: what the device could do if nothing but the
    bytes mattered. Prefill needs ~2 x parameters FLOPs a token (attention ignored).
    """
    if record["status"] != "ok":
        return None
    bandwidth = profile.get("copy_bandwidth_Bps")
    if not bandwidth:
        return {"reason": profile.get("reason") or "no hardware profile for this run"}
    weights = record["memory"].get("weights_bytes")
    if weights:  # an untied embedding table is looked up, one row a token, not read whole
        weights -= record.get("unread_weight_bytes") or 0
    kv = record["info"].get("kv_bytes_per_position")
    decode = record["metrics"].get("decode_tok_s")
    if not weights or not decode:
        return {"reason": "no weight bytes or decode speed to place"}
    w = record["workload"]
    # A static cache (compiled runtime) is read whole every step, masked or not.
    positions = record["info"].get("kv_positions_read") or w["prompt_tokens"] + w["new_tokens"] / 2
    kv_bytes = (kv or 0) * w["batch_size"] * positions
    per_step = weights + kv_bytes
    ceiling = w["batch_size"] * bandwidth / per_step
    out = {"bandwidth_Bps": bandwidth, "bandwidth_source": "measured copy (read + write)",
           "weights_bytes_per_step": weights, "kv_bytes_per_step": kv_bytes,
           "embedding_bytes_left_out": record.get("unread_weight_bytes") or 0,
           "kv_counted": kv is not None, "bytes_per_token": per_step / w["batch_size"],
           "ceiling_tok_s": ceiling, "achieved_pct": 100 * decode["median"] / ceiling,
           "achieved_bandwidth_Bps": decode["median"] * per_step / w["batch_size"]}
    flops = profile.get("matmul_flops")
    params = record["info"].get("parameters")
    prefill = record["metrics"].get("prefill_tok_s")
    if flops and params and prefill:
        out["prefill_ceiling_tok_s"] = flops / (2 * params)
        out["prefill_achieved_pct"] = 100 * prefill["median"] / out["prefill_ceiling_tok_s"]
        out["compute_source"] = f"measured {profile.get('matmul_dtype')} matmul"
    return out
