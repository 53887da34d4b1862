"""What each dashboard panel shows, computed once for both the PNG and the HTML dashboard.

A panel with nothing to show carries the reason instead, so an empty chart is never mistaken
for a zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quantbench.analysis import quantized_bits


@dataclass
class Panel:
    key: str
    title: str
    reason: str | None = None  # why it is empty
    data: dict = field(default_factory=dict)


def _ok(records):
    return [r for r in records if r["status"] == "ok" and "decode_tok_s" in r["metrics"]]


def pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Points (speed, loss, name) not beaten on both: faster-or-equal and lower-or-equal loss."""
    front = [p for p in points if not any(q[0] >= p[0] and q[1] <= p[1] and (q[0], q[1]) != (p[0], p[1])
                                          for q in points)]
    return sorted(front)


def build(records: list[dict], history: list[dict]) -> list[Panel]:
    """`records`: the run's cells; `history`: every ok cell of the database (size vs speed)."""
    from quantbench.report.markdown import scheme_label

    from quantbench.report.sweep import short_labels

    ok = _ok(records)
    short = short_labels(records)  # {} for one comparison: the scheme names say it all

    def scheme_label(r, plain=scheme_label):
        return plain(r) + (f" · {short[r['comparison']]}" if short.get(r.get("comparison")) else "")

    def name(r):
        return r["scheme"] + (f" · {short[r['comparison']]}" if short.get(r.get("comparison")) else "")

    schemes = [scheme_label(r) for r in ok]
    panels = []

    speed = Panel("speed", "Decode tok/s (median, 95% CI)")
    speed.data = {"x": schemes, "y": [r["metrics"]["decode_tok_s"]["median"] for r in ok],
                  "low": [r["metrics"]["decode_tok_s"]["median_ci"][0] for r in ok],
                  "high": [r["metrics"]["decode_tok_s"]["median_ci"][1] for r in ok]}
    panels.append(speed)

    memory = Panel("memory", "Memory (MB): weights and peak")
    memory.data = {"x": schemes,
                   "weights": [r["memory"].get("weights_bytes", 0) / 1e6 for r in ok],
                   "peak": [r["memory"].get("peak_bytes", 0) / 1e6 for r in ok]}
    panels.append(memory)

    versus = [r for r in ok if not r["baseline"] and (r.get("vs_baseline") or {}).get("decode_speedup")
              and r["vs_baseline"].get("speed_reference") != r["scheme"]
              and r["vs_baseline"]["decode_speedup"].get("verdict") != "not comparable"]
    speedup = Panel("speedup", "Decode speedup vs baseline, GGUF vs llama.cpp's own F32/F16 (95% CI)")
    if versus:
        # "gguf-q4_k_m / gguf-f32": a GGUF scheme's bar is against llama.cpp's own reference.
        speedup.data = {"x": [name(r) + (f" / {r['vs_baseline']['speed_reference']}"
                                             if r["vs_baseline"].get("speed_reference") else "")
                              for r in versus],
                        "y": [r["vs_baseline"]["decode_speedup"]["ratio"] for r in versus],
                        "low": [r["vs_baseline"]["decode_speedup"]["ci95"][0] for r in versus],
                        "high": [r["vs_baseline"]["decode_speedup"]["ci95"][1] for r in versus]}
    else:
        speedup.reason = "no successful baseline and scheme to compare"
    panels.append(speedup)

    util = Panel("gpu_util", "GPU utilization (%)")
    with_util = [r for r in ok if "gpu_util_pct" in r["metrics"]]
    if with_util:
        util.data = {"x": [name(r) for r in with_util],
                     "y": [r["metrics"]["gpu_util_pct"]["median"] for r in with_util]}
    elif ok and all(r["device"] == "cpu" for r in ok):
        util.reason = "CPU run: there is no GPU to measure"
    else:
        util.reason = "not measured: this run sampled no NVML utilization"
    panels.append(util)

    reduction = Panel("memory_reduction", "Weight memory reduction vs baseline (%)")
    reduced = [r for r in ok if not r["baseline"] and "weights_reduction_pct" in (r.get("vs_baseline") or {})]
    if reduced:
        reduction.data = {"x": [name(r) for r in reduced],
                          "y": [r["vs_baseline"]["weights_reduction_pct"] for r in reduced]}
    else:
        reduction.reason = "no successful baseline and scheme to compare"
    panels.append(reduction)

    size = Panel("size_speed", "Model size vs decode speed (every run in the database)")
    device = ok[0]["device"] if ok else None
    points = [h for h in history if h["device"] == device and h["info"].get("parameters")]
    if points:
        by_scheme: dict[str, dict] = {}
        for h in points:
            series = by_scheme.setdefault(h["scheme"], {"x": [], "y": [], "label": []})
            series["x"].append(h["info"]["parameters"] / 1e6)
            series["y"].append(h["metrics"]["decode_tok_s"]["median"])
            series["label"].append(f"{h['model']} (run {h['run_id']})")
        size.data = {"device": device, "series": by_scheme}
    else:
        size.reason = "no measured cell with a parameter count"
    panels.append(size)

    quality = Panel("quality_speed", "Quality (KL vs baseline) vs decode speed, Pareto frontier")
    scored = [r for r in ok if (r.get("quality") or {}).get("kl_mean") is not None]
    if scored:
        pts = [(r["metrics"]["decode_tok_s"]["median"], r["quality"]["kl_mean"], name(r)) for r in scored]
        quality.data = {"points": pts, "front": pareto(pts), "x_title": "decode tok/s"}
    elif ok and ok[0].get("random_weights"):
        quality.reason = "random weights: quality is meaningless, so it is not measured"
    else:
        quality.reason = "quality was not measured in this run"
    panels.append(quality)

    per_bit = Panel("quality_bits", "Quality (KL vs baseline) vs bits per weight as stored, "
                    "Pareto frontier")
    weighed = [r for r in scored if quantized_bits(r)]
    if weighed:
        pts = [(quantized_bits(r), r["quality"]["kl_mean"],
                name(r) + (f" (PPL x{r['quality']['ppl_ratio']:.3f})"
                           if r["quality"].get("ppl_ratio") else "")) for r in weighed]
        # Fewer bits and less drift are both better: the front of (-bits, KL), bits restored.
        front = [(-b, kl, n) for b, kl, n in pareto([(-b, kl, n) for b, kl, n in pts])]
        per_bit.data = {"points": pts, "front": sorted(front),
                        "x_title": "bits per weight as stored (layers between the tables)"}
    else:
        per_bit.reason = quality.reason or "no cell with both a KL and its stored bytes"
    panels.append(per_bit)

    roofline = Panel("roofline", "Roofline: achieved vs ceiling tok/s")
    profiled = [r for r in ok if (r.get("roofline") or {}).get("ceiling_tok_s")]
    if profiled:
        roofline.data = {"x": [name(r) for r in profiled],
                         "achieved": [r["metrics"]["decode_tok_s"]["median"] for r in profiled],
                         "ceiling": [r["roofline"]["ceiling_tok_s"] for r in profiled]}
    elif ok and (ok[0].get("roofline") or {}).get("reason"):
        roofline.reason = ok[0]["roofline"]["reason"]
    else:
        roofline.reason = "no hardware profile (bandwidth ceiling) recorded for this device"
    panels.append(roofline)
    if short:
        panels += sweep_panels(records)
    return panels


def sweep_panels(records: list[dict]) -> list[Panel]:
    """A sweep's own charts: speedup along each axis that varies (where quantization stops
    paying), and tok/s per sequence against tok/s per device across batch sizes (Pareto)."""
    from quantbench.report.sweep import AXES, pareto as pareto_points, series

    out = []
    for axis, (what, _) in AXES.items():
        lines = series(records, axis)
        if not lines:
            continue
        panel = Panel(f"crossover_{axis}", f"Decode speedup vs {what} (95% CI; 1 = baseline)")
        panel.data = {"axis": axis, "log_x": axis != "context" or True,
                      "series": [{"name": f"{l['scheme']} ({', '.join(str(f) for f in l['fixed'][:2])})",
                                  "x": [p["x"] / 1e6 if axis == "model" else p["x"] for p in l["points"]],
                                  "y": [p["ratio"] for p in l["points"]],
                                  "low": [p["ci95"][0] for p in l["points"]],
                                  "high": [p["ci95"][1] for p in l["points"]]} for l in lines],
                      "x_title": {"batch_size": "batch size", "model": "parameters (M)",
                                  "context": "prompt + new tokens"}[axis]}
        out.append(panel)
    pts = pareto_points(records)
    if len({p["batch_size"] for p in pts}) > 1:
        panel = Panel("pareto_batch", "tok/s per sequence vs tok/s per device (across batch "
                      "sizes; Pareto front marked)")
        by: dict[str, dict] = {}
        for p in pts:
            s = by.setdefault(f"{p['scheme']} · {p['model']}", {"x": [], "y": [], "label": [],
                                                                "front": []})
            s["x"].append(p["per_device"])
            s["y"].append(p["per_sequence"])
            s["label"].append(f"batch {p['batch_size']}")
            s["front"].append(p["pareto"])
        panel.data = {"series": by}
        out.append(panel)
    return out
