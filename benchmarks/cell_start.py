"""What starting CPU cells from the fork server saves: the same run with each cell forked from
the preloaded server and with each in a fresh interpreter (QUANTBENCH_CELL_START=exec).

    PYTHONPATH=src python benchmarks/cell_start.py --out cell-start
    PYTHONPATH=src python benchmarks/cell_start.py --out cell-start --model default --rounds 2

Each mode is a real `quantbench run` (--force, no quality, the baseline measured once) into its
own database, alternated `--rounds` times so drift on the host hits both. Written:
OUT/cell-start.md (the run's wall time, and per cell the wall time the run waited for it, its
startup_s (process start to the cell's own work) and load_s) and OUT/<mode>-<round>.db. Run
nothing else on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = {"fork": "fork server", "exec": "fresh interpreter"}


def _run(mode: str, db: Path, args) -> tuple[float, list[dict]]:
    env = {**os.environ, "QUANTBENCH_CELL_START": mode}
    cmd = [sys.executable, "-m", "quantbench", "run", "--model", args.model, "--schemes",
           args.schemes, "--prompt-tokens", "16", "--new-tokens", "8", "--warmup", "1", "--runs",
           "3", "--no-quality", "--no-repeat-baseline", "--force", "--log", "", "--db", str(db),
           "--out", str(db.parent / "results")]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{mode} run failed:\n{proc.stderr[-2000:]}")
    export = subprocess.run([sys.executable, "-m", "quantbench", "export", "--format", "json",
                             "--db", str(db)], capture_output=True, text=True, env=env, check=True)
    records = json.loads(export.stdout)
    assert {r["info"]["launch"]["how"] for r in records} == {MODES[mode]}, records[0]["info"]
    return wall, records


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="cell-start")
    p.add_argument("--model", default="random:tiny")
    p.add_argument("--schemes", default="fp32,bf16,torchao-int8wo,torchao-int4wo")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    walls: dict[str, list[float]] = {m: [] for m in MODES}
    cells: dict[str, list[dict]] = {m: [] for m in MODES}
    for i in range(args.rounds):
        for mode in MODES:
            db = out / f"{mode}-{i}.db"
            db.unlink(missing_ok=True)
            wall, records = _run(mode, db, args)
            walls[mode].append(wall)
            cells[mode] += records
            print(f"round {i + 1} {mode}: {wall:.1f} s for {len(records)} cells", flush=True)

    def median(mode, key):
        return statistics.median(r["info"][key] for r in cells[mode])

    n = len(args.schemes.split(","))
    lines = [f"# Cell start: fork server against fresh interpreters ({time.strftime('%Y-%m-%d')})",
             "", f"`{args.model}`, schemes {args.schemes}: {n} cells a run, 16 + 8 tokens, 1 "
             f"warm-up + 3 timed runs, {args.rounds} rounds alternating the modes.", "",
             "| cells start from | run wall s (each round) | median per cell: startup s | load s |",
             "|---|---|--:|--:|"]
    for mode, how in MODES.items():
        lines.append(f"| {how} | {', '.join(f'{w:.1f}' for w in walls[mode])} | "
                     f"{median(mode, 'startup_s'):.2f} | {median(mode, 'load_s'):.2f} |")
    saved = statistics.median(walls["exec"]) - statistics.median(walls["fork"])
    lines += ["", f"Median run wall time saved: {saved:.1f} s ({saved / n:.1f} s a cell)."]
    (out / "cell-start.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
