"""The seed's comparison, redone like with like on a GPU: sizes x schemes x runtimes.

    PYTHONPATH=src python benchmarks/seed_table.py --out seed-table            # measure + render
    PYTHONPATH=src python benchmarks/seed_table.py --out seed-table --render-only --db a.db --db b.db
    ... --render-only --db a.db --records old/seed-table.json   # cells a database lacks

Each (size, runtime) is one `quantbench run` (a subprocess per cell, as always) into one results
database, so an interrupted table resumes: identical cells already measured are reused, never
measured twice. Then the table is rendered from the database(s): a dashboard per run
(`quantbench report`) and `seed-table.md`, every size and scheme with eager and compiled side by
side, speed against bf16 of the same size and runtime, the share of the bandwidth roofline, and
for compiled cells whether one CUDA graph covered the step and where the step's time went.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SIZES = {"124m": "gpt2-124m", "1b": "llama-3.2-1b", "8b": "llama-3.1-8b",
         "tiny": "tiny"}  # tiny: to try the script on a CPU in seconds
SCHEMES = ["bf16", "fp16", "bnb-int8", "bnb-nf4", "torchao-int8wo", "torchao-int4wo",
           "torchao-float8wo"]
RUNTIMES = ["eager", "compiled"]
PURPOSE = "seed table"


def _arguments(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="seed-table", help="folder for the database, dashboards, table")
    p.add_argument("--sizes", default="124m,1b,8b", help=f"from {', '.join(SIZES)}")
    p.add_argument("--schemes", default=",".join(SCHEMES), help="the first is the baseline")
    p.add_argument("--runtimes", default=",".join(RUNTIMES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--cell-timeout", type=float, default=900)
    p.add_argument("--db", action="append", help="database(s) to render (default: OUT/seed.db)")
    p.add_argument("--records", action="append", default=[],
                   help="an earlier seed-table.json whose cells fill those the databases lack "
                        "(where a database was lost but its rendered table came back)")
    p.add_argument("--render-only", action="store_true", help="render what the database holds")
    p.add_argument("--no-reports", action="store_true", help="skip the per-run dashboards")
    return p.parse_args(argv)


def _split(text: str, allowed=None, what="") -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if allowed is not None and x not in allowed]
    if not items:
        sys.exit(f"error: {what} is empty: name at least one")
    if bad:
        sys.exit(f"error: {what} {', '.join(bad)} not understood: choose from {', '.join(allowed)}")
    return items


def measure(args, db: Path) -> None:
    for size in _split(args.sizes, SIZES, "--sizes"):
        for runtime in _split(args.runtimes, RUNTIMES, "--runtimes"):
            command = [sys.executable, "-m", "quantbench", "run", "-m", f"random:{SIZES[size]}",
                       "-s", args.schemes, "--runtime", runtime, "--device", args.device,
                       "--prompt-tokens", str(args.prompt_tokens),
                       "--new-tokens", str(args.new_tokens), "--warmup", str(args.warmup),
                       "--runs", str(args.runs), "--cell-timeout", str(args.cell_timeout),
                       "--db", str(db), "--out", str(db.parent / "results"),
                       "--log", str(db.parent / "LOG.md"),
                       "--purpose", f"{PURPOSE}: {size} {runtime}"]
            print(f"== {size} {runtime}: {' '.join(command[2:])}", flush=True)
            start = time.perf_counter()
            done = subprocess.run(command)
            print(f"== {size} {runtime}: exit {done.returncode}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)


def _key(r: dict) -> tuple:
    """One table cell: a card, a size, a scheme, a runtime."""
    return r["card"], r["model"], r["scheme"], r["runtime"]


def _records(dbs: list[Path]) -> tuple[list[dict], list[tuple[Path, str]]]:
    """The newest successful-or-failed record per (card, size, scheme, runtime) across the
    databases, and the (database, run) pairs they came from."""
    from quantbench.analysis import build_records
    from quantbench.store import Store

    latest: dict[tuple, dict] = {}
    runs = []
    for db in dbs:
        store = Store(db, create=False)
        for run_id in store.run_ids():
            purpose = store.run(run_id)["purpose"] or ""
            if not purpose.startswith(PURPOSE):
                continue
            runs.append((db, run_id))
            for r in build_records(store, run_id):
                if r.get("role", "measure") != "measure":  # the baseline's repeat: a check
                    continue
                r["card"] = _card(r)
                latest[_key(r)] = r
        store.close()
    return list(latest.values()), runs


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
        return (f"1 graph/token ({how}), check {check.get('steps')} tokens identical, "
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


def render(records: list[dict], runs, out: Path, dashboards: list[str]) -> Path:
    by_key = {_key(r): r for r in records}
    cards = sorted({r["card"] for r in records})
    lines = ["# Seed table: sizes x schemes x runtimes", ""]
    for card in cards:
        rows = [r for r in records if r["card"] == card]
        head = next(r for r in rows if r.get("workload"))  # older JSON records lack it
        w = head["workload"]
        lines += [f"## {card}", "",
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
        models = [m for m in (f"random:{p}" for p in SIZES.values())
                  if any(r["model"] == m for r in rows)]
        seen = list(dict.fromkeys(r["scheme"] for r in rows))
        schemes = [s for s in SCHEMES if s in seen] + [s for s in seen if s not in SCHEMES]
        for model in models:
            for scheme in schemes:  # every scheme on every size: what was not run says so
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
                lines.append(f"| {model.split(':')[1]} | {scheme} | " + " | ".join(cells) +
                             f" | {_fmt(weights and weights / 1e6, 0)} | {_fmt(read and read / 1e9, 2)}"
                             f" | {_fmt(ceiling, 0)} | {_fmt(peak and peak / 1e6, 0)}"
                             f" | {graph} |")
        lines += ["", "Compiled cells, one decode step as the profiler saw it inside the graph "
                  "(kernels per token, kernel time per token, busy share of the measured step, "
                  "time by kernel family):", ""]
        for r in rows:
            if r["runtime"] == "compiled" and r["status"] == "ok":
                lines.append(f"- {r['model'].split(':')[1]} {r['scheme']}: {_profile(r)}")
        lines.append("")
    lines += ["## Where it came from", ""]
    lines += [f"- {db}: run {run}" for db, run in runs]
    lines += [f"- {src}: {', '.join(sorted(f'{m.split(chr(58))[1]} {s} {rt}' for m, s, rt in cells))} "
              "(rendered records; their database did not come back)"
              for src, cells in _sources(records).items()]
    lines += [f"- dashboard: {d}" for d in dashboards]
    path = out / "seed-table.md"
    path.write_text("\n".join(lines) + "\n")
    json_path = out / "seed-table.json"
    json_path.write_text(json.dumps(
        [{k: r.get(k) for k in ("card", "model", "scheme", "runtime", "status", "error", "metrics",
                                "memory", "roofline", "workload", "repetitions", "env_key")}
         | {"compiled": (r.get("info") or {}).get("compiled"),
            "vs_bf16": _saved_speedup(r)}
         for r in records], indent=1, default=str))
    return path


def _saved_speedup(r: dict) -> dict | None:
    speed = (r.get("vs_baseline") or {}).get("decode_speedup")
    if speed and (r.get("vs_baseline") or {}).get("baseline_scheme") == "bf16":
        return {k: speed.get(k) for k in ("ratio", "ci95", "verdict", "threshold")}
    return r.get("vs_bf16")


def main(argv=None) -> int:
    args = _arguments(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dbs = [Path(d) for d in args.db] if args.db else [out / "seed.db"]
    if not args.render_only:
        _split(args.schemes, None, "--schemes")
        measure(args, dbs[0])
    missing = [d for d in dbs if not d.exists()]
    if missing:
        sys.exit(f"error: no database at {', '.join(map(str, missing))}: measure first")
    records, runs = _records(dbs)
    records += _json_records([Path(p) for p in args.records], records)
    if not records:
        sys.exit(f"error: no '{PURPOSE}' runs in {', '.join(map(str, dbs))}")
    dashboards = []
    if not args.no_reports:
        for db, run in runs:
            made = subprocess.run([sys.executable, "-m", "quantbench", "report", "--db", str(db),
                                   "--run", run, "--out", str(out / "dashboards")],
                                  capture_output=True, text=True, env=dict(os.environ))
            dashboards += [line.strip() for line in made.stdout.splitlines() if line.strip().endswith(".html")]
    path = render(records, runs, out, dashboards)
    print(path.read_text())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
