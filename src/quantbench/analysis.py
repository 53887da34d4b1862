"""Turn stored cells into records: statistics from the raw samples, comparison to the baseline.

A record is what `export --format json` writes for one cell; tables and CSV are views of it.
"""

from __future__ import annotations

from quantbench.identity import environment_key
from quantbench.measure.stats import DEFAULT_MARGIN, ratio_of_medians, summarize, verdict
from quantbench.models import RANDOM_LABEL

HEADLINE_METRICS = ("decode_tok_s", "prefill_tok_s", "ttft_ms", "e2e_tok_s",
                    "decode_ms_per_token", "token_latency_ms", "e2e_s")


def build_records(store, run_id: str) -> list[dict]:
    run = store.run(run_id)
    env = store.env(run["env_id"]) if run["env_id"] else {}
    cells = store.cells(run_id)
    envs: dict[str, dict] = {}
    records = []
    for cell in cells:
        cell_env = envs.setdefault(cell["env_id"], store.env(cell["env_id"]) if cell["env_id"] else {})
        records.append(_record(run_id, cell, env, cell_env))
    state = store.run_state(run_id)["state"]  # finished, interrupted or unfinished
    for record in records:
        record["run_state"] = state
        # The ceilings of the machine that measured the cell (a cluster's nodes each have theirs).
        own = (envs.get(record["env_id"]) or {}).get("hardware") or {}
        record["roofline"] = roofline(record, own if own.get("copy_bandwidth_Bps") or
                                      own.get("read_bandwidth_Bps") else env.get("hardware") or {})
        record["bits_per_weight"] = bits_per_weight(record)
    margin = run["config"].get("margin", DEFAULT_MARGIN)
    labels = {c["key"]: c["label"] for c in run["config"].get("comparisons") or []}
    groups: dict[str, list[dict]] = {}
    for record in records:  # each comparison against its own baseline (one for older runs)
        record["comparison_label"] = labels.get(record["comparison"])
        groups.setdefault(record["comparison"], []).append(record)
    for members in groups.values():
        comparison = Comparison.of(members, margin)
        for record in members:
            record["vs_baseline"] = comparison.versus(record)
    return records


class Comparison:
    """Every cell against the baseline of its run (or its engine's reference run), under the
    run's rules: same environment only, the baseline's drift between its two measurements as
    a noise floor, a practical-equivalence margin, no claim below MIN_RUNS_FOR_CLAIM runs."""

    def __init__(self, base, repeat, by_scheme, margin):
        self.base, self.repeat, self.by_scheme, self.margin = base, repeat, by_scheme, margin
        self.drift = None
        if _ok(base) and _ok(repeat) and base["env_key"] == repeat["env_key"]:
            a = repeat["metrics"].get(_RATE)
            b = base["metrics"].get(_RATE)
            if a and b:
                self.drift = ratio_of_medians(a["samples"], b["samples"])

    @classmethod
    def of(cls, records, margin):
        base = next((r for r in records if r["baseline"] and r["role"] == "measure"), None)
        repeat = next((r for r in records if r["role"] == "baseline-repeat"), None)
        by_scheme = {r["scheme"]: r for r in records if r["role"] == "measure"}
        return cls(base, repeat, by_scheme, margin)

    @property
    def noise_floor(self) -> float | None:
        """How far the baseline may have moved by itself: the farther end of its drift's
        interval from 1 (two processes of one scheme differ by more than either's interval)."""
        if not self.drift:
            return None
        low, high = self.drift["ci95"]
        return max(abs(self.drift["ratio"] - 1), abs(low - 1), abs(high - 1))

    def versus(self, record) -> dict | None:
        base = self.base
        if base is None or not _ok(record) or not _ok(base):
            return None
        if record["role"] == "baseline-repeat":
            return self._drift_record(record)
        ref_name = (record.get("speed_reference") or None)
        speed_ref = self.by_scheme.get(ref_name, base) if ref_name else base
        out: dict = {"baseline_scheme": base["scheme"], "margin": self.margin,
                     "noise_floor": self.noise_floor,
                     "noise_floor_source": ("the baseline's drift between its two measurements"
                                            if self.drift else "none: the baseline was measured "
                                            "once (--no-repeat-baseline or it failed)")}
        if speed_ref is not base:
            out["speed_reference"] = speed_ref["scheme"]
        same_env = record["env_key"] == speed_ref["env_key"]
        out["same_environment"] = same_env
        if not same_env:
            out["not_comparable"] = (f"{record['scheme']} was measured in another environment "
                                     f"than {speed_ref['scheme']} (run {record['measured_in_run']} "
                                     f"vs {speed_ref['measured_in_run']})")
        if _ok(speed_ref) and record is not speed_ref:
            for metric, key in (("decode_tok_s", "decode_speedup"), ("e2e_tok_s", "e2e_speedup"),
                                ("prefill_tok_s", "prefill_speedup")):
                a, b = record["metrics"].get(metric), speed_ref["metrics"].get(metric)
                if a and b:
                    out[key] = verdict(ratio_of_medians(a["samples"], b["samples"]), a["n"], b["n"],
                                       self.margin, self.noise_floor, same_env,
                                       out.get("not_comparable"))
        for mem_key, key, needs_env in (("weights_bytes", "weights_reduction_pct", False),
                                        ("peak_bytes", "peak_reduction_pct", True)):
            a, b = record["memory"].get(mem_key), base["memory"].get(mem_key)
            if a and b and (not needs_env or record["env_key"] == base["env_key"]):
                out[key] = 100.0 * (1 - a / b)
        return out

    def _drift_record(self, record) -> dict:
        out = {"baseline_scheme": self.base["scheme"], "margin": self.margin,
               "noise_floor": self.noise_floor, "same_environment":
               record["env_key"] == self.base["env_key"]}
        if self.drift:
            a, b = record["metrics"][_RATE], self.base["metrics"][_RATE]
            # The A/A check: the same scheme twice must come out equivalent within the margin.
            out["baseline_drift"] = verdict(self.drift, a["n"], b["n"], self.margin)
        return out


_RATE = "decode_tok_s"


def _ok(record) -> bool:
    return record is not None and record["status"] == "ok"


def _record(run_id: str, cell: dict, env: dict, cell_env: dict) -> dict:
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
        "model_config": {k: model.get(k) for k in ("kind", "preset", "path")},
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
        "env_key": environment_key(cell_env, cell["device"]),
        "env": env,
        "role": (config.get("extra") or {}).get("role", "measure"),
        "speed_reference": (config.get("extra") or {}).get("speed_reference"),
        "comparison": (config.get("extra") or {}).get("comparison") or "run",
        "groups": (config.get("extra") or {}).get("groups") or [],
    }


def _unread_from_config(config: dict) -> int | None:
    """For cells measured before workers recorded it: an untied input embedding's bytes at the
    compute dtype (no scheme here quantizes embeddings; GGUF cells always recorded it). Read
    from the preset or config.json directly: importing transformers would cost every report."""
    hf = _hf_config(config["model"])
    try:
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
    one row a token, so it is left out) and each sequence's KV cache; averaged over the
    decode, a sequence's cache holds prompt + new/2 positions. The ceiling is the measured
    bandwidth over those bytes: what the device could do if nothing but the bytes mattered
    (GPU: the copy rate, read + write; CPU: a read-dominated kernel, where a copy's
    write-allocate traffic understates what reads reach). Prefill runs 2 FLOPs per weight of
    the body per prompt token, the embedding being a lookup and the head running on the last
    position only; its ceiling is the matmul rate of the dtype the cell multiplies in.
    """
    if record["status"] != "ok":
        return None
    cpu = record.get("device") == "cpu"
    bandwidth = (profile.get("read_bandwidth_Bps") if cpu else None) or profile.get("copy_bandwidth_Bps")
    if not bandwidth:
        return {"reason": profile.get("reason") or "no hardware profile for this run"}
    source = (f"measured read ({profile['read_kernel']})" if cpu and profile.get("read_bandwidth_Bps")
              else "measured copy (read + write)")
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
    tables = record["info"].get("tables") or {}
    head = tables.get("lm_head") or {}
    out = {"bandwidth_Bps": bandwidth, "bandwidth_source": source,
           "copy_bandwidth_Bps": profile.get("copy_bandwidth_Bps"),
           "read_bandwidth_Bps": profile.get("read_bandwidth_Bps"),
           "weights_bytes_per_step": weights, "kv_bytes_per_step": kv_bytes,
           "embedding_bytes_left_out": record.get("unread_weight_bytes") or 0,
           "lm_head_bytes_per_step": head.get("bytes"), "lm_head_dtype": head.get("dtype"),
           "embedding_dtype": (tables.get("embedding") or {}).get("dtype"),
           "kv_counted": kv is not None, "bytes_per_token": per_step / w["batch_size"],
           "ceiling_tok_s": ceiling, "achieved_pct": 100 * decode["median"] / ceiling,
           "achieved_bandwidth_Bps": decode["median"] * per_step / w["batch_size"]}
    out.update(_prefill_ceiling(record, profile))
    return out


def bits_per_weight(record: dict) -> dict | None:
    """Bits each weight takes as stored, scales, zero points and packing included, from the
    bytes the cell measured: over the whole model, and over the layers between the embedding and
    the output head (what a scheme quantizes; the two tables are mostly left alone). A 4-bit
    value kept in an 8-bit container reads as 8 here, whatever the scheme's name says."""
    if record["status"] != "ok":
        return None
    weights = record["memory"].get("weights_bytes")
    params = record["info"].get("parameters")
    if not weights or not params:
        return None
    out = {"model": 8 * weights / params}
    tables = record["info"].get("tables") or {}
    emb, head = tables.get("embedding") or {}, tables.get("lm_head") or {}
    if emb.get("bytes") is not None and head.get("bytes") is not None:
        emb_params, head_params, tied = _table_params(record)
        table_bytes = emb["bytes"] + (0 if head.get("tied") else head["bytes"])
        table_params = emb_params + (0 if tied else head_params)
        if weights > table_bytes and params > table_params:
            out["layers"] = 8 * (weights - table_bytes) / (params - table_params)
    nominal = _nominal_bits(record)
    if nominal and out.get("layers") and out["layers"] > nominal + 2:
        out["container_note"] = (f"a {nominal:g}-bit scheme storing {out['layers']:.1f} bits per "
                                 "weight in its layers: wider containers or types than its name")
    return out


def quantized_bits(record: dict) -> float | None:
    """The layers' bits per weight (what the scheme quantized), else the whole model's."""
    bits = record.get("bits_per_weight") or {}
    return bits.get("layers") or bits.get("model")


def _nominal_bits(record: dict) -> float | None:
    try:
        from quantbench.schemes import get

        return float(get(record["scheme"]).bits)
    except Exception:  # a plugin scheme not importable where the report is made
        return None


def _prefill_ceiling(record: dict, profile: dict) -> dict:
    params = record["info"].get("parameters")
    prefill = record["metrics"].get("prefill_tok_s")
    if not (params and prefill):
        return {}
    kind = _matmul_kind(record)
    rates = profile.get("matmul") or {}
    rate = (rates.get(kind) or {}).get("flops")
    source = f"measured {kind} matmul"
    if not rate and profile.get("matmul_flops"):  # profiles measured before rates per dtype
        rate = profile["matmul_flops"]
        source = (f"measured {profile.get('matmul_dtype')} matmul (no {kind} rate in this "
                  "profile)")
    if not (rate and params and prefill):
        return {}
    embedding, head, tied = _table_params(record)
    body = params - embedding - (0 if tied else head)
    if body <= 0:
        return {}
    prompt = record["workload"]["prompt_tokens"]
    flops_per_token = 2 * body + 2 * head / prompt  # the head runs once per sequence
    ceiling = rate / flops_per_token
    return {"prefill_ceiling_tok_s": ceiling, "prefill_achieved_pct": 100 * prefill["median"] / ceiling,
            "prefill_flops_per_token": flops_per_token, "compute_source": source,
            "compute_dtype": kind}


def _matmul_kind(record: dict) -> str:
    compute = (record.get("scheme_settings") or {}).get("compute_dtype") or "float32"
    try:
        from quantbench.schemes import get

        return get(record["scheme"]).matmul_kind(record.get("device", "cpu").split(":")[0])
    except Exception:  # a plugin scheme not importable where the report is made
        return compute


def _table_params(record: dict) -> tuple[int, int, bool]:
    """(embedding parameters, head parameters, tied) from the cell's record, or for cells
    recorded before they were kept, from the model's config."""
    tables = record["info"].get("tables") or {}
    emb, head = tables.get("embedding") or {}, tables.get("lm_head") or {}
    if emb.get("parameters") and head.get("parameters"):
        return emb["parameters"], head["parameters"], bool(head.get("tied"))
    hf = _hf_config(record.get("model_config") or {})
    if not hf or "vocab_size" not in hf or "hidden_size" not in hf:
        return 0, 0, True
    n = int(hf["vocab_size"]) * int(hf["hidden_size"])
    return n, n, bool(hf.get("tie_word_embeddings", True))


def _hf_config(model: dict) -> dict | None:
    """A model's HF config as a dict, from the preset or config.json: importing transformers
    would cost every report seconds."""
    import json
    from pathlib import Path

    from quantbench.presets import PRESETS

    try:
        if model.get("kind") == "random":
            return dict(PRESETS[model["preset"]].config)
        hf = json.loads((Path(model["path"]) / "config.json").read_text())
        return hf.get("text_config", hf)
    except (KeyError, OSError, ValueError, TypeError):
        return None
