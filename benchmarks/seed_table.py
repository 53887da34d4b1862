"""Render the seed table from the database(s) of `quantbench sweep benchmarks/seed_table.yaml`.

    quantbench sweep benchmarks/seed_table.yaml --db seed.db --out seed-results   # measure
    PYTHONPATH=src python benchmarks/seed_table.py --db seed.db --out seed         # this table
    ... --db a.db --db b.db --records old/seed-table.json    # several databases, lost cells

The sweep measures (resumable, one comparison per GPU); this script only reads what it stored
and writes `seed-table.md` (and `seed-table.json`, the rendered cells) with what the sweep's
own report does not lay out: every size and scheme with eager and compiled side by side at
batch 1, the batch axis as a table, the same cells measured on each GPU set against each
other, how busy each GPU was and the sweep's wall time. Runs are those whose purpose starts
with "seed table" (the sweep file sets it), or the ones named with --run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

SIZES = {"124m": "gpt2-124m", "1b": "llama-3.2-1b", "8b": "llama-3.1-8b", "tiny": "tiny"}
SCHEMES = ["bf16", "fp16", "bnb-int8", "bnb-nf4", "torchao-int8wo", "torchao-int4wo",
           "torchao-float8wo"]
RUNTIMES = ["eager", "compiled"]
PURPOSE = "seed table"


def _arguments(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", action="append", required=True, help="a sweep's database (repeatable)")
    p.add_argument("--run", action="append", default=[],
                   help="render these runs (default: every run whose purpose starts with "
                        f"'{PURPOSE}')")
    p.add_argument("--out", default="seed-table", help="folder for seed-table.md and .json")
    p.add_argument("--records", action="append", default=[],
                   help="an earlier seed-table.json whose cells fill those the databases lack "
                        "(where a database was lost but its rendered table came back)")
    return p.parse_args(argv)


def _key(r: dict) -> tuple:
    """One cell of the side-by-side table: a card, a size, a scheme, a runtime."""
    return r["card"], r["model"], r["scheme"], r["runtime"]


def _batch(r: dict) -> int:
    return (r.get("workload") or {}).get("batch_size", 1)


def _gpu(r: dict) -> str:
    """Where the cell ran: the GPU a pool placed it on, else the device it named, and which card
    that was where the cell's environment recorded GPU UUIDs (a resumed sweep's cuda:0 can be
    another machine's). A Ray task sees its GPU as cuda:0; the node's own number is in the
    cell's Ray record (cells measured before the executor recorded it there)."""
    info = r.get("info") or {}
    ray_gpus = (info.get("ray") or {}).get("gpu_ids")
    if ray_gpus and str(r.get("device", "")).startswith("cuda"):
        label = f"cuda:{ray_gpus[0]}"
    else:
        label = info.get("placed_on") or r.get("device") or r.get("gpu")
    uuid = _gpu_uuid(r.get("cell_env") or {}, label)
    return f"{label} ({uuid[:12]})" if uuid else label


def _gpu_uuid(env: dict, label) -> str | None:
    gpus = env.get("gpus") or []
    if len(gpus) == 1:  # a cell that saw only its own GPU (a Ray task) recorded just that one
        return gpus[0].get("uuid")
    index = int(label.split(":")[1]) if label and label.startswith("cuda:") else None
    return next((g.get("uuid") for g in gpus if g.get("index") == index), None)


def _records(dbs: list[Path], wanted: list[str]) -> tuple[list[dict], list[tuple[Path, str]], list]:
    """Every record of the chosen runs (baseline repeats included: they used a GPU too), the
    (database, run) pairs, and each run's interruptions."""
    from quantbench.analysis import build_records
    from quantbench.store import Store

    records, runs, interrupts, superseded, plans = [], [], [], [], []
    for db in dbs:
        # Read a copy: opening a store brings an older schema up to date, and a rendered
        # table must not change the database it was rendered from.
        scratch = Path(tempfile.mkdtemp()) / db.name
        shutil.copyfile(db, scratch)
        store = Store(scratch, create=False)
        for run_id in store.run_ids():
            purpose = store.run(run_id)["purpose"] or ""
            if run_id not in wanted if wanted else not purpose.startswith(PURPOSE):
                continue
            runs.append((db, run_id))  # named by the original
            interrupts += [(run_id, at) for (at,) in store.db.execute(
                "SELECT at FROM run_interrupts WHERE run_id=?", (run_id,))]
            for r in build_records(store, run_id):
                r["card"] = _card(r)
                r["cell_env"] = store.env(r["env_id"]) if r.get("env_id") else {}
                records.append(r)
            superseded += _superseded(store, run_id)
            plans.append(_plan_status(store, run_id, [r for r in records if r["run_id"] == run_id]))
        store.close()
        shutil.rmtree(scratch.parent)
    return records, runs, interrupts, superseded, plans


def _plan_status(store, run_id: str, records: list[dict]) -> dict:
    """How much of the run's plan is measured, and the comparisons not begun."""
    state = store.run_state(run_id)
    begun = {r.get("comparison") for r in records}
    return {"run_id": run_id, "planned": state["cells_planned"] or 0, "measured": len(records),
            "finished": state["state"] == "finished",
            "not_begun": [c["label"] for c in store.run(run_id)["config"].get("comparisons") or []
                          if c["key"] not in begun]}


def _superseded(store, run_id: str) -> list[dict]:
    """The run's cells that its records no longer show (a comparison interrupted half-way is
    measured again whole on resume), as records enough for the agreement check and GPU time."""
    found = []
    for cell in store.superseded_cells(run_id):
        values = cell["samples"].get("decode_tok_s")
        if cell["status"] != "ok" or not values:
            continue
        record = {"model": cell["model"], "scheme": cell["scheme"], "runtime": cell["runtime"],
                  "device": cell["device"], "workload": cell["config"].get("workload"),
                  "env": store.env(cell["env_id"]), "cell_env": store.env(cell["env_id"]),
                  "role": (cell["config"].get("extra") or {}).get("role", "measure"),
                  "info": cell["info"], "status": "ok",
                  "metrics": {"decode_tok_s": {"median": statistics.median(values)}},
                  "started_at": cell["started_at"], "wall_s": cell["wall_s"], "superseded": True}
        record["card"] = _card(record)
        found.append(record)
    return found


def _side_by_side(records: list[dict]) -> list[dict]:
    """Batch-1 cells, the newest per (card, size, scheme, runtime); a cell the pool placed
    wins over one pinned to a GPU (those are the agreement check's)."""
    latest: dict[tuple, dict] = {}
    for r in records:
        if r.get("role", "measure") != "measure" or _batch(r) != 1:
            continue
        key = _key(r)
        pinned = ":" in r.get("device", "")
        if key not in latest or not pinned or ":" in latest[key].get("device", ""):
            latest[key] = r
    return list(latest.values())


def _json_records(paths: list[Path], have: list[dict]) -> list[dict]:
    """Cells from earlier seed-table.json files that no database holds; the databases win.
    Such a cell is compared only with the bf16 cell of its own file (one device call, one
    machine): a database's bf16 may come from another machine."""
    keys = {_key(r) for r in have}
    extra = {}
    for path in paths:
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            sys.exit(f"error: --records {path}: not a seed-table.json ({exc})")
        own = {_key(r): r for r in rows}
        for r in rows:
            key = _key(r)
            if key not in keys:
                base = own.get((r["card"], r["model"], "bf16", r["runtime"]))
                extra[key] = r | {"info": {"compiled": r.get("compiled")}, "source": str(path),
                                  "json_base": base}
    return list(extra.values())


def _speedup(r: dict) -> str:
    """x bf16 under the run's rules: the cell's own run's bf16, same environment, with the
    verdict mark (~ equivalent, ? inconclusive, n<5 no claim); what cannot be compared says so."""
    from quantbench.report.markdown import VERDICT_MARKS

    if r.get("scheme") == "bf16":
        return "1.00x"
    if "json_base" in r:  # a rendered record whose database did not come back
        base = r["json_base"]
        saved = r.get("vs_bf16")
        if saved:
            return f"{saved['ratio']:.2f}x{VERDICT_MARKS.get(saved.get('verdict'), '')}"
        if not base or base.get("status") != "ok":
            return "n/c (no bf16 from the same call)"
        ratio = r["metrics"]["decode_tok_s"]["median"] / base["metrics"]["decode_tok_s"]["median"]
        return f"{ratio:.2f}x (same call, no CI)"
    versus = r.get("vs_baseline") or {}
    speed = versus.get("decode_speedup")
    if versus.get("baseline_scheme") != "bf16":
        return "n/c (bf16 not this run's baseline)"
    if not speed:
        return "n/c (bf16 measured on another machine)" if versus.get("not_comparable") else "-"
    if speed.get("verdict") == "not comparable":
        return "n/c (bf16 measured on another machine)"
    return f"{speed['ratio']:.2f}x{VERDICT_MARKS.get(speed.get('verdict'), '')}"


def _card(record) -> str:
    gpus = (record.get("env") or {}).get("gpus") or []
    return gpus[0]["name"] if gpus and record["device"].startswith("cuda") else record["device"]


def _fmt(value, digits=0, unit=""):
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def _graph(r) -> str:
    c = (r.get("info") or {}).get("compiled")
    if not c:
        return "-"
    g = c.get("cuda_graph") or {}
    compile_ = c.get("compile") or {}
    how = "inductor" if "error" not in compile_ and "skipped" not in compile_ else "eager kernels"
    if g.get("captured"):
        check = g.get("check") or {}
        same = "identical" if check.get("identical") else "within tolerance"
        return (f"1 graph/token ({how}), check {check.get('steps')} tokens {same}, "
                f"compile {compile_.get('seconds', 0):.0f} s")
    why = g.get("reason") or "not recorded"
    extra = f"; compile failed: {compile_['error']}" if "error" in compile_ else ""
    return f"no graph: {why}{extra}"


def _profile(r) -> str:
    p = ((r.get("info") or {}).get("compiled") or {}).get("profile") or {}
    if "kernels_per_token" not in p:
        return "-"
    step_ms = (r["metrics"].get("decode_ms_per_token") or {}).get("median")
    kinds = sorted(p["by_kind"].items(), key=lambda kv: -kv[1]["us_per_token"])
    parts = ", ".join(f"{k} {v['us_per_token']:.0f} us/{v['kernels_per_token']:.0f}"
                      for k, v in kinds[:4])
    busy = f"; GPU busy {100 * p['kernel_us_per_token'] / (step_ms * 1e3):.0f}% of the step" if step_ms else ""
    return f"{p['kernels_per_token']:.0f} kernels, {p['kernel_us_per_token']:.0f} us{busy} ({parts})"


def _sources(records: list[dict]) -> dict[str, list[tuple]]:
    found: dict[str, list[tuple]] = {}
    for r in records:
        if r.get("source"):
            found.setdefault(r["source"], []).append((r["model"], r["scheme"], r["runtime"]))
    return found


def _schemes(rows: list[dict]) -> list[str]:
    seen = list(dict.fromkeys(r["scheme"] for r in rows))
    return [x for x in SCHEMES if x in seen] + [x for x in seen if x not in SCHEMES]


def _models(rows: list[dict]) -> list[str]:
    known = [f"random:{p}" for p in SIZES.values()]
    seen = list(dict.fromkeys(r["model"] for r in rows))
    return [m for m in known if m in seen] + [m for m in seen if m not in known]


def _short(model: str) -> str:
    return model.split(":", 1)[-1]


def side_by_side(records: list[dict]) -> list[str]:
    """Batch 1: every size and scheme, eager and compiled side by side, per card."""
    by_key = {_key(r): r for r in records}
    lines = []
    for card in sorted({r["card"] for r in records}):
        rows = [r for r in records if r["card"] == card]
        head = next(r for r in rows if r.get("workload"))  # older JSON records lack it
        w = head["workload"]
        lines += [f"## Batch 1, eager and compiled side by side: {card}", "",
                  f"batch {w['batch_size']}, {w['prompt_tokens']} prompt + {w['new_tokens']} new "
                  f"tokens, {head['repetitions']['warmup']} warm-up + {head['repetitions']['runs']} "
                  "timed runs per cell; random weights (speed and memory only). Speed-up: decode "
                  "tok/s over bf16's of the same size and runtime, measured in the same run on the "
                  "same machine (n/c where the only bf16 cell came from another machine or run: "
                  "such a ratio measures the machines, not the schemes); ~ = equivalent within "
                  "the 2% margin, ? = inconclusive, n<5 = too few runs for a "
                  "claim. Roofline: decode against the "
                  "measured copy bandwidth over the bytes a token reads (weights, less an untied "
                  "embedding table that is only looked up, plus the KV cache; compiled cells read "
                  "their whole static cache); GB read/token and roof tok/s are the last runtime's.", "",
                  "| size | scheme | eager tok/s | eager x bf16 | eager % roof | compiled tok/s | "
                  "compiled x bf16 | compiled % roof | weights MB | GB read/token | roof tok/s | "
                  "peak MB (compiled) | CUDA graph |",
                  "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
        for model in _models(rows):
            for scheme in _schemes(rows):  # every scheme on every size: what was not run says so
                cells = []
                weights = peak = read = ceiling = None
                graph = "-"
                for runtime in RUNTIMES:
                    r = by_key.get((card, model, scheme, runtime))
                    if r is None:
                        cells += ["not run"] + ["-"] * 2
                        continue
                    if r["status"] != "ok":
                        cells += [f"failed: {r['error'][:80]}"] + ["-"] * 2
                        continue
                    tok = r["metrics"]["decode_tok_s"]["median"]
                    roof = (r.get("roofline") or {}).get("achieved_pct")
                    cells += [_fmt(tok, 1), _speedup(r), _fmt(roof, 0, "%")]
                    weights = r["memory"].get("weights_bytes")
                    read = (r.get("roofline") or {}).get("bytes_per_token")
                    ceiling = (r.get("roofline") or {}).get("ceiling_tok_s")
                    if runtime == "compiled":
                        peak = r["memory"].get("peak_bytes")
                        graph = _graph(r)
                lines.append(f"| {_short(model)} | {scheme} | " + " | ".join(cells) +
                             f" | {_fmt(weights and weights / 1e6, 0)} | {_fmt(read and read / 1e9, 2)}"
                             f" | {_fmt(ceiling, 0)} | {_fmt(peak and peak / 1e6, 0)}"
                             f" | {graph} |")
        lines += ["", "Compiled cells, one decode step as the profiler saw it inside the graph "
                  "(kernels per token, kernel time per token, busy share of the measured step, "
                  "time by kernel family):", ""]
        for r in rows:
            if r["runtime"] == "compiled" and r["status"] == "ok":
                lines.append(f"- {_short(r['model'])} {r['scheme']}: {_profile(r)}")
        lines.append("")
    return lines


def batch_scaling(records: list[dict]) -> list[str]:
    """Each size and runtime measured at more than one batch size: tok/s per device and per
    sequence, and each scheme against bf16 of its own batch."""
    measured = [r for r in records if r.get("role", "measure") == "measure" and r.get("workload")
                and ":" not in r.get("device", "")]
    lines = []
    for card in sorted({r["card"] for r in measured}):
        for runtime in RUNTIMES:
            rows = [r for r in measured if r["card"] == card and r["runtime"] == runtime]
            models = [m for m in _models(rows) if len({_batch(r) for r in rows if r["model"] == m}) > 1]
            if not models:
                continue
            schemes = _schemes(rows)
            lines += [f"## Batch scaling: {card}, {runtime}", "",
                      "Decode tok/s of the whole batch (per sequence: divide by the batch), and x "
                      "bf16 of the same size and batch, measured beside it on the same GPU. Where "
                      "the ratio falls below 1.00 quantization has stopped paying: the step has "
                      "turned from reading weights to computing with them.", "",
                      "| size | batch | " + " | ".join(f"{x} tok/s | {x} x bf16" for x in schemes) + " |",
                      "|---|--:|" + "--:|--:|" * len(schemes)]
            for model in models:
                for batch in sorted({_batch(r) for r in rows if r["model"] == model}):
                    cells = []
                    for scheme in schemes:
                        r = next((x for x in reversed(rows) if x["model"] == model and
                                  _batch(x) == batch and x["scheme"] == scheme), None)
                        if r is None:
                            cells += ["not run", "-"]
                        elif r["status"] != "ok":
                            cells += [f"failed: {r['error'][:60]}", "-"]
                        else:
                            cells += [_fmt(r["metrics"]["decode_tok_s"]["median"], 1), _speedup(r)]
                    lines.append(f"| {_short(model)} | {batch} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def _same_cell(r: dict) -> tuple:
    w = r.get("workload") or {}
    return (r["card"], r["model"], r["scheme"], r["runtime"], w.get("batch_size"),
            w.get("prompt_tokens"), w.get("new_tokens"))


def gpu_agreement(records: list[dict], margin: float = 0.02) -> list[str]:
    """The same cell (model, scheme, runtime, workload) measured on two GPUs of one card kind.
    Each measurement is its own process (a baseline's repeat is the same cell again), so a cell
    measured twice on one GPU shows how far it moves between processes there: a gap between
    GPUs within the margin agrees; one within that same-GPU spread shows no effect of the GPU
    (nor rules one out below the spread); one beyond both is a disagreement."""
    by_cell: dict[tuple, dict[str, list[float]]] = {}
    for r in records:
        if r["status"] == "ok" and r.get("workload") and "decode_tok_s" in r.get("metrics", {}):
            by_cell.setdefault(_same_cell(r), {}).setdefault(_gpu(r), []).append(
                r["metrics"]["decode_tok_s"]["median"])
    pairs = [(cell, gpus) for cell, gpus in by_cell.items() if len(gpus) > 1]
    if not pairs:
        return []
    lines = ["## The same cells on each GPU", "",
             "Cells measured on more than one GPU (the sweep's pinned groups, or the pool placing "
             "the same cell on each), with every process's median decode tok/s on each GPU (the "
             "baseline's repeat and a comparison measured again after an interruption are the "
             f"same cell in another process). Gap: between the GPUs' medians; spread: the largest "
             f"max/min - 1 of one cell's processes on one GPU. They agree within the {margin:.0%} "
             "margin; a gap inside the spread shows no effect of the GPU beyond how far the "
             "figure moves between processes.", "",
             "| size | scheme | runtime | batch | GPU | processes, tok/s | GPU | processes, tok/s "
             "| gap | spread on one GPU | verdict |", "|---|---|---|--:|---|--:|---|--:|--:|--:|---|"]
    worst, worst_spread, verdicts = 0.0, 0.0, []
    for cell, gpus in pairs:
        (a, va), (b, vb) = sorted(gpus.items())[:2]
        gap = statistics.median(vb) / statistics.median(va) - 1
        spreads = [max(v) / min(v) - 1 for v in gpus.values() if len(v) > 1]
        spread = max(spreads) if spreads else None
        worst = max(worst, abs(gap))
        worst_spread = max(worst_spread, spread or 0.0)
        if abs(gap) <= margin:
            verdict = "agree"
        elif spread is not None and abs(gap) <= spread:
            verdict = "within the spread: no GPU effect shown"
        else:
            verdict = f"no ({gap:+.1%})"
        verdicts.append(verdict)
        shown = [", ".join(f"{x:,.1f}" for x in v) for v in (va, vb)]
        lines.append(f"| {_short(cell[1])} | {cell[2]} | {cell[3]} | {cell[4]} | {a} | {shown[0]} | "
                     f"{b} | {shown[1]} | {gap:+.1%} | {_fmt(spread and 100 * spread, 1, '%')} "
                     f"| {verdict} |")
    if all(v == "agree" for v in verdicts):
        summary = f"they agree (largest gap {worst:.2%})"
    elif not any(v.startswith("no") for v in verdicts):
        summary = (f"they do not agree within {margin:.0%} (largest gap {worst:.2%}), but no gap "
                   f"exceeds how far the same cell moves between processes on one GPU (up to "
                   f"{worst_spread:.1%}): the figures vary between processes, not between GPUs")
    else:
        summary = f"they do not agree (largest gap {worst:.2%}, beyond the same-GPU spread)"
    lines += ["", f"{len(pairs)} cell(s) on two GPUs: {summary}.", ""]
    return lines


def _time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def gpu_use(records: list[dict], interrupts: list, finished: bool = True) -> list[str]:
    """How busy each GPU was: cells, seconds with a cell on it, its share of the time any cell
    ran, and NVML's utilization during the timed runs; the measuring wall time of the sweep."""
    timed = [r for r in records if r.get("started_at") and r.get("wall_s") is not None]
    if not timed:
        return []
    spans = {}
    for r in timed:
        start = _time(r["started_at"])
        spans.setdefault(_gpu(r), []).append((start, start + r["wall_s"]))
    wall = _union([s for ss in spans.values() for s in ss])
    busy = sum(b - a for ss in spans.values() for a, b in ss)
    lines = ["## GPUs and wall time", "",
             "Busy: seconds a cell held the GPU (its worker's whole life: load, quantize, compile, "
             "warm-ups, timed runs, quality); share: of the time any cell was running. "
             "Utilization: NVML's, median over the cells' timed runs.", "",
             "| GPU | cells | busy s | share of the sweep's measuring time | NVML utilization % (median of cells) |",
             "|---|--:|--:|--:|--:|"]
    for gpu in sorted(spans):
        own = [r for r in timed if _gpu(r) == gpu]
        util = [r["metrics"]["gpu_util_pct"]["median"] for r in own if "gpu_util_pct" in r["metrics"]]
        seconds = sum(b - a for a, b in spans[gpu])
        lines.append(f"| {gpu} | {len(own)} | {seconds:,.0f} | {seconds / wall:.0%} | "
                     f"{_fmt(statistics.median(util) if util else None, 0)} |")
    if finished:
        calls = (f"over {len(interrupts) + 1} invocation(s) of the sweep ({len(interrupts)} "
                 "interrupted and resumed)")
    else:
        calls = (f"over {len(interrupts)} invocation(s) of the sweep, each interrupted (the run "
                 "is not finished)")
    lines += ["", f"Measuring wall time: {wall:,.0f} s with at least one cell running "
              f"({busy:,.0f} s of cell time in all: {busy / wall:.2f} cells at once on average), "
              f"{calls}; time between invocations is not counted. Cells of a comparison "
              "interrupted half-way, and measured again whole on resume, are counted: they "
              "held the GPU.", ""]
    return lines


def plan_status(plans: list[dict]) -> list[str]:
    lines = []
    for plan in plans:
        if plan["finished"] and plan["measured"] >= plan["planned"]:
            continue
        lines.append(f"**Not finished:** run {plan['run_id']} holds {plan['measured']} of the "
                     f"{plan['planned']} cells it planned (the same sweep command resumes it).")
        if plan["not_begun"]:
            lines.append("Comparisons not begun: " + "; ".join(plan["not_begun"]) + ".")
        lines.append("")
    return lines


def render(records: list[dict], runs, interrupts, out: Path, superseded=(), plans=()) -> Path:
    lines = ["# Seed table: sizes x schemes x runtimes", ""]
    lines += plan_status(list(plans))
    lines += side_by_side(_side_by_side(records))
    lines += batch_scaling(records)
    lines += gpu_agreement(records + list(superseded))
    finished = all(p["finished"] for p in plans)
    lines += gpu_use(records + list(superseded), interrupts, finished)
    lines += ["## Where it came from", ""]
    lines += [f"- {db}: run {run}" for db, run in runs]
    lines += [f"- {src}: {', '.join(sorted(f'{_short(m)} {s} {rt}' for m, s, rt in cells))} "
              "(rendered records; their database did not come back)"
              for src, cells in _sources(records).items()]
    path = out / "seed-table.md"
    path.write_text("\n".join(lines) + "\n")
    json_path = out / "seed-table.json"
    json_path.write_text(json.dumps(
        [{k: r.get(k) for k in ("card", "model", "scheme", "runtime", "status", "error", "metrics",
                                "memory", "roofline", "workload", "repetitions", "env_key")}
         | {"compiled": (r.get("info") or {}).get("compiled"), "gpu": _gpu(r) if "device" in r else None,
            "vs_bf16": _saved_speedup(r)}
         for r in records if r.get("role", "measure") == "measure"], indent=1, default=str))
    return path


def _saved_speedup(r: dict) -> dict | None:
    speed = (r.get("vs_baseline") or {}).get("decode_speedup")
    if speed and (r.get("vs_baseline") or {}).get("baseline_scheme") == "bf16":
        return {k: speed.get(k) for k in ("ratio", "ci95", "verdict", "threshold")}
    return r.get("vs_bf16")


def main(argv=None) -> int:
    args = _arguments(argv)
    out = Path(args.out)
    dbs = [Path(d) for d in args.db]
    missing = [d for d in dbs if not d.is_file()]
    if missing:
        sys.exit(f"error: no database at {', '.join(map(str, missing))}: run the sweep first "
                 "(quantbench sweep benchmarks/seed_table.yaml --db ...)")
    records, runs, interrupts, superseded, plans = _records(dbs, args.run)
    unknown = sorted(set(args.run) - {run for _, run in runs})
    if unknown:
        sys.exit(f"error: no run {', '.join(unknown)} in {', '.join(map(str, dbs))}: "
                 "`quantbench runs --db DB` lists them")
    records += _json_records([Path(p) for p in args.records], _side_by_side(records))
    if not records:
        sys.exit(f"error: no '{PURPOSE}' runs in {', '.join(map(str, dbs))}: name one with --run")
    out.mkdir(parents=True, exist_ok=True)
    path = render(records, runs, interrupts, out, superseded, plans)
    print(path.read_text())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
