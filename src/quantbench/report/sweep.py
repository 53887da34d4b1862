"""What a run of several comparisons shows: each comparison apart, and across them, where
quantization stops paying (crossovers) along batch size, model size and context length.

A crossover is read from the verdicts, never from point estimates alone: a scheme "pays" at a
point when its decode speedup over the baseline of that point is `faster` (the whole interval
beyond the equivalence threshold), and stops paying between the last such point and the next,
where it is equivalent or slower. Points without a claim (too few runs, other environments)
are named as such.
"""

from __future__ import annotations

from collections import OrderedDict

AXES = {"batch_size": ("batch size", "batch"), "model": ("model size", "model"),
        "context": ("context length", "context")}


def by_comparison(records: list[dict]) -> list[tuple[str, list[dict]]]:
    """[(label, records of one comparison)] in the run's order."""
    out: OrderedDict[str, list[dict]] = OrderedDict()
    for record in records:
        out.setdefault(record.get("comparison") or "run", []).append(record)
    return [(_label(members[0]), members) for members in out.values()]


def _label(record: dict) -> str:
    if record.get("comparison_label"):
        return record["comparison_label"]
    w = record["workload"]
    return (f"{record['model']} · {record['runtime']} · batch {w['batch_size']} · "
            f"{w['prompt_tokens']}+{w['new_tokens']} · {record['device']}")


def _point(record: dict) -> dict:
    w = record["workload"]
    base_runtime = record["runtime"] if not record.get("speed_reference") else "llama.cpp"
    return {"model": record["model"], "runtime": base_runtime, "device": record["device"],
            "batch_size": w["batch_size"], "prompt_tokens": w["prompt_tokens"],
            "new_tokens": w["new_tokens"], "parameters": (record.get("info") or {}).get("parameters")}


def _context(point: dict) -> int:
    return point["prompt_tokens"] + point["new_tokens"]


def series(records: list[dict], axis: str) -> list[dict]:
    """Speedup of each scheme along one axis, the other axes held fixed: one entry per
    (scheme, fixed part) with at least two points."""
    if axis not in AXES:
        raise ValueError(axis)
    lines: dict[tuple, dict] = {}
    params_by_model: dict[str, int] = {}
    for r in records:
        if r["role"] == "measure" and r["baseline"] and (r.get("info") or {}).get("parameters"):
            params_by_model[r["model"]] = r["info"]["parameters"]
    for r in records:
        if r["role"] != "measure" or r["baseline"] or r["status"] != "ok":
            continue
        vs = r.get("vs_baseline") or {}
        speed = vs.get("decode_speedup")
        if not speed:
            continue
        p = _point(r)
        if axis == "batch_size":
            x, fixed = p["batch_size"], (p["model"], p["runtime"], p["device"], _context(p))
        elif axis == "model":
            x = params_by_model.get(p["model"]) or p["parameters"]
            if not x:
                continue
            fixed = (p["runtime"], p["device"], p["batch_size"], _context(p))
        else:
            x, fixed = _context(p), (p["model"], p["runtime"], p["device"], p["batch_size"])
        key = (r["scheme"], vs.get("baseline_scheme"), fixed)
        line = lines.setdefault(key, {"scheme": r["scheme"], "baseline": vs.get("baseline_scheme"),
                                      "fixed": fixed, "axis": axis, "points": {}})
        line["points"][x] = {"x": x, "ratio": speed["ratio"], "ci95": speed["ci95"],
                             "verdict": speed["verdict"], "label": _x_label(axis, x, r)}
    out = []
    for line in lines.values():
        if len(line["points"]) >= 2:
            line["points"] = [line["points"][x] for x in sorted(line["points"])]
            out.append(line)
    return out


def _x_label(axis: str, x, record: dict) -> str:
    if axis == "batch_size":
        return f"batch {x}"
    if axis == "context":
        return f"{x} tokens"
    return f"{record['model']} ({x / 1e6:,.0f}M parameters)"


def crossover(line: dict) -> str:
    """One sentence: where the scheme pays along the axis and where it stops."""
    name, (what, _) = line["scheme"], AXES[line["axis"]]
    pts = line["points"]

    def fig(p):
        lo, hi = p["ci95"]
        return f"{p['label']}: {p['ratio']:.2f}x [{lo:.2f}, {hi:.2f}]"

    pays = [p for p in pts if p["verdict"] == "faster"]
    unclaimed = [p for p in pts if p["verdict"] in ("no claim", "not comparable", "inconclusive")]
    head = f"{name} vs {line['baseline']} along {what} ({_fixed_text(line)}): "
    if not pays:
        if len(unclaimed) == len(pts):
            return head + "no claim at any point (" + "; ".join(fig(p) for p in pts) + ")"
        return head + "never significantly faster (" + "; ".join(fig(p) for p in pts) + ")"
    if len(pays) == len(pts):
        return head + "faster at every point (" + "; ".join(fig(p) for p in pts) + ")"
    # the first point after a paying one where it no longer pays
    for before, after in zip(pts, pts[1:]):
        if before["verdict"] == "faster" and after["verdict"] in ("equivalent", "slower"):
            return (head + f"stops paying between {before['label']} and {after['label']} ("
                    + fig(before) + " -> " + fig(after) + ")")
    for before, after in zip(pts, pts[1:]):
        if before["verdict"] in ("equivalent", "slower") and after["verdict"] == "faster":
            return (head + f"starts paying between {before['label']} and {after['label']} ("
                    + fig(before) + " -> " + fig(after) + ")")
    return head + "; ".join(f"{fig(p)} {p['verdict']}" for p in pts)


def _fixed_text(line: dict) -> str:
    f = line["fixed"]
    if line["axis"] == "batch_size":
        return f"{f[0]}, {f[1]}, {f[2]}, {f[3]} tokens"
    if line["axis"] == "model":
        return f"{f[0]}, {f[1]}, batch {f[2]}, {f[3]} tokens"
    return f"{f[0]}, {f[1]}, {f[2]}, batch {f[3]}"


def crossover_lines(records: list[dict]) -> list[str]:
    """Every crossover a run can show, as sentences (empty when no axis varies)."""
    out = []
    for axis in AXES:
        for line in series(records, axis):
            out.append(crossover(line))
    return out


def pareto(records: list[dict]) -> list[dict]:
    """Per (model, scheme, runtime): tok/s per sequence against tok/s per device across batch
    sizes, each point marked when no other point of the run beats it on both."""
    pts = []
    for r in records:
        if r["role"] != "measure" or r["status"] != "ok" or "decode_tok_s" not in r["metrics"]:
            continue
        b = r["workload"]["batch_size"]
        total = r["metrics"]["decode_tok_s"]["median"]
        pts.append({"model": r["model"], "scheme": r["scheme"], "runtime": r["runtime"],
                    "batch_size": b, "per_device": total, "per_sequence": total / b,
                    "device": r["device"], "context": _context(_point(r))})
    for p in pts:
        p["pareto"] = not any(q is not p and q["model"] == p["model"] and q["context"] == p["context"]
                              and q["per_device"] >= p["per_device"]
                              and q["per_sequence"] >= p["per_sequence"]
                              and (q["per_device"] > p["per_device"]
                                   or q["per_sequence"] > p["per_sequence"]) for q in pts)
    return pts


def short_labels(records: list[dict]) -> dict[str, str]:
    """{comparison: the axis values that tell it from the run's other comparisons} ("batch 8 ·
    compiled"); empty for a run of one comparison."""
    if len({r.get("comparison") or "run" for r in records}) < 2:
        return {}
    points = {}
    for r in records:
        p = _point(r)
        points.setdefault(r.get("comparison") or "run", {
            "model": r["model"], "runtime": p["runtime"] if not r.get("speed_reference") else None,
            "batch": f"batch {p['batch_size']}", "context": f"{p['prompt_tokens']}+{p['new_tokens']}",
            "device": r["device"]})
    if len(points) < 2:
        return {}
    varying = [k for k in ("model", "runtime", "batch", "context", "device")
               if len({v[k] for v in points.values() if v[k] is not None}) > 1]
    return {c: " · ".join(str(v[k]) for k in varying if v[k] is not None)
            for c, v in points.items()}
