"""Time to a defensible result: how long each repetition policy takes on the default job, and
how tight an interval it leaves.

    PYTHONPATH=src python benchmarks/time_to_result.py --out ttr
    PYTHONPATH=src python benchmarks/time_to_result.py --out ttr --schemes fp32 --model random:tiny

Three policies, each a real `quantbench run` (a subprocess per cell, --force, no quality, the
baseline measured once so the policies are timed alike) into one database:
  auto     --runs auto (the default: >= 5 runs, stop at a +-1% median interval, <= 30 s a cell)
  auto60   the same with --max-seconds 60
  fixed10  --warmup 2 --runs 10 (the old default)
  seed     --warmup 10 --runs 100 (the seed project's 100 runs + 10 warm-ups)
Written: OUT/time-to-result.md (wall time per policy, runs per cell, the median's 95% interval
half-width per cell) and OUT/ttr.db. Run nothing else on the machine meanwhile: a second
process on 2 cores moves every figure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

POLICIES = {"auto": ["--runs", "auto"], "auto60": ["--runs", "auto", "--max-seconds", "60"],
            "fixed10": ["--warmup", "2", "--runs", "10"],
            "seed": ["--warmup", "10", "--max-warmup", "10", "--runs", "100"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="time-to-result")
    p.add_argument("--model", default="default")
    p.add_argument("--schemes", default="fp32,bf16,torchao-int8wo,torchao-int4wo")
    p.add_argument("--policies", default=",".join(POLICIES))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "ttr.db"
    rows = []
    for name in [x.strip() for x in args.policies.split(",") if x.strip()]:
        if name not in POLICIES:
            sys.exit(f"error: --policies {name} not understood: choose from {', '.join(POLICIES)}")
        command = [sys.executable, "-m", "quantbench", "run", "--model", args.model, "--schemes",
                   args.schemes, "--no-quality", "--force", "--no-repeat-baseline", "--db", str(db),
                   "--out", str(out / "results"), "--log", "", "--purpose",
                   f"time to result: {name}", *POLICIES[name]]
        print(f"== {name}: {' '.join(command[3:])}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(command)
        rows.append((name, time.perf_counter() - start, done.returncode))
    from quantbench.analysis import build_records
    from quantbench.store import Store

    store = Store(db, create=False)
    runs = store.run_ids()[-len(rows):]
    lines = ["# Time to result", "", f"Model `{args.model}`, schemes {args.schemes}, no quality, "
             "baseline measured once; wall time is the whole `quantbench run` (process starts, "
             "model loads, warm-ups, timed runs).", "",
             "| policy | wall s | exit | per scheme: timed runs + warm-ups, median decode tok/s, "
             "95% CI half-width of the median (stop reason) |", "| --- | --: | --: | --- |"]
    for (name, wall, code), run_id in zip(rows, runs):
        cells = []
        for r in build_records(store, run_id):
            if r["status"] != "ok":
                cells.append(f"{r['scheme']}: failed")
                continue
            stop, warm = r["info"]["timed_runs"], r["info"]["warmup"]
            med = r["metrics"]["decode_tok_s"]["median"]
            cells.append(f"{r['scheme']}: {stop['runs']}+{warm['done']}w, {med:.1f} tok/s, "
                         f"±{stop['median_ci_halfwidth_pct']:.1f}% ({stop['reason']})")
        lines.append(f"| {name} | {wall:.0f} | {code} | {'; '.join(cells)} |")
    store.close()
    path = out / "time-to-result.md"
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
