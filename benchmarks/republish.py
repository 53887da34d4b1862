"""Re-render every run of the committed result databases under the current comparison rules.

    PYTHONPATH=src python benchmarks/republish.py --out docs/results/republished

One Markdown file per database in docs/results/data/, each run as `quantbench export --format md`
writes it: statistics recomputed from the stored raw samples; speedups only between cells of
the same environment (a scheme whose baseline was reused from another machine reads "not
compared"); fewer than 5 timed runs make no claim; ratios within the 2% margin are equivalent.
Runs measured before the baseline was repeated at the end have no drift check, and say so.
Nothing is measured: a re-render needs no GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(HERE / "docs" / "results" / "data"))
    p.add_argument("--out", default=str(HERE / "docs" / "results" / "republished"))
    args = p.parse_args(argv)
    from quantbench.analysis import build_records
    from quantbench.report.exports import to_markdown
    from quantbench.store import Store

    dbs = sorted(Path(args.data).glob("*.db"))
    if not dbs:
        sys.exit(f"error: no databases in {args.data}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for db in dbs:
        store = Store(db, create=False)
        parts = [f"# {db.name}, re-rendered under the like-with-like rules", "",
                 f"Every run of `{db.relative_to(HERE) if db.is_relative_to(HERE) else db}`, as "
                 "`quantbench export --format md` renders it from the stored raw samples "
                 "(`benchmarks/republish.py`). Rules: docs/methodology.md.", ""]
        for run_id in store.run_ids():
            run = store.run(run_id)
            records = build_records(store, run_id)
            if not records:
                parts += [f"## quantbench run {run_id}", "", "No cell was stored.", ""]
                continue
            parts += [to_markdown(records).replace("## quantbench run", "## run", 1),
                      f"Command: `{run['command'] or 'Python API'}`", ""]
        store.close()
        path = out / f"{db.stem}.md"
        path.write_text("\n".join(parts))
        print(f"wrote {path}")
    exports = [p for p in sorted(Path(args.data).glob("2*-*-*.json")) if _is_run_export(p)]
    if exports:
        parts = ["# Run exports whose database was not kept, re-rendered", "",
                 "JSON exports (`quantbench export --format json`, raw samples included) re-rendered "
                 "from their samples under the current rules (`benchmarks/republish.py`). A cell's "
                 "environment here is its recorded env_id: cells reused from another run with "
                 "another environment are not compared.", ""]
        for path in exports:
            parts += [to_markdown(_rejudged(json.loads(path.read_text()))).replace(
                "## quantbench run", f"## {path.name}: run", 1), ""]
        target = out / "run-exports.md"
        target.write_text("\n".join(parts))
        print(f"wrote {target}")
    return 0


def _is_run_export(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return False
    return isinstance(data, list) and bool(data) and "cell_id" in data[0] and "metrics" in data[0]


def _rejudged(records: list[dict]) -> list[dict]:
    from quantbench.analysis import Comparison

    for r in records:
        r.setdefault("role", "measure")
        r["env_key"] = r.get("env_key") or r.get("env_id")
        r["speed_reference"] = (r.get("vs_baseline") or {}).get("speed_reference")
    comparison = Comparison.of(records, 0.02)
    for r in records:
        r["vs_baseline"] = comparison.versus(r)
    return records


if __name__ == "__main__":
    sys.exit(main())
