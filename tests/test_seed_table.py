"""The seed table as a sweep on the CPU (tiny preset): `quantbench sweep` measures, then
benchmarks/seed_table.py renders the database: eager and compiled side by side, the batch axis,
the GPUs' use and wall time, and cells from a lost database filled from an earlier render."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, cli_env, quantbench

SCRIPT = ROOT / "benchmarks" / "seed_table.py"
SWEEP = """\
purpose: seed table (tiny)
model: random:tiny
device: cpu
schemes: [bf16, torchao-int8wo]
prompt_tokens: 16
new_tokens: 6
warmup: 1
runs: 2
repeat_baseline: false
groups:
  seed:
    runtime: [eager, compiled]
  batch-scaling:
    runtime: compiled
    batch_size: [1, 2]
"""


def _seed_table(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=900)


def _module():
    spec = importlib.util.spec_from_file_location("seed_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_table_renders_a_sweep_side_by_side_with_batch_and_gpu_use(tmp_path):
    (tmp_path / "seed.yaml").write_text(SWEEP)
    swept = quantbench("sweep", "seed.yaml", "--db", "seed.db", cwd=tmp_path)
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    out = tmp_path / "seed"
    proc = _seed_table("--db", "seed.db", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (out / "seed-table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| tiny | ")]
    side = [row for row in rows if row.split(" | ")[1] in ("bf16", "torchao-int8wo")]
    assert [row.split(" | ")[1] for row in side] == ["bf16", "torchao-int8wo"]
    for row in side:
        cells = row.split(" | ")
        assert float(cells[2].replace(",", "")) > 0 and float(cells[5].replace(",", "")) > 0
        assert "no graph: CUDA graphs need a CUDA device" in row
    assert side[0].split(" | ")[3] == "1.00x" and side[0].split(" | ")[6] == "1.00x"
    # The batch axis: one row per batch size, each scheme against bf16 of its own batch.
    batch = [row.split(" | ") for row in rows if row.split(" | ")[1] in ("1", "2")]
    assert [cells[1] for cells in batch] == ["1", "2"]
    assert all(cells[3] == "1.00x" and float(cells[4].replace(",", "")) > 0 for cells in batch)
    assert "## GPUs and wall time" in table and "| cpu | 6 |" in table
    assert "over 1 invocation(s) of the sweep (0 interrupted and resumed)" in table
    assert "## The same cells on each GPU" not in table  # one device: nothing to set side by side
    records = json.loads((out / "seed-table.json").read_text())
    compiled = [r for r in records if r["runtime"] == "compiled"]
    assert len(compiled) == 4 and all(r["compiled"]["compile"]["graph_breaks"] == 0 for r in compiled)

    # Cells whose database was lost come back from an earlier seed-table.json; the database wins.
    lost = next(r for r in records if r["runtime"] == "compiled" and r["scheme"] != "bf16")
    lost = lost | {"scheme": "torchao-int4wo"}
    lost["metrics"] = lost["metrics"] | {"decode_tok_s": {"median": 12345.0}}
    stale = next(r for r in records if r["runtime"] == "compiled" and r["scheme"] == "bf16")
    stale = stale | {"metrics": stale["metrics"] | {"decode_tok_s": {"median": 99999.0}}}
    (tmp_path / "old.json").write_text(json.dumps([lost, stale]))
    merged = _seed_table("--db", "seed.db", "--out", str(out), "--records",
                         str(tmp_path / "old.json"), cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    table = (out / "seed-table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| tiny | torchao-int4wo |"))
    assert row.split(" | ")[2] == "not run" and row.split(" | ")[5] == "12,345.0"
    assert "99,999" not in table and "tiny torchao-int4wo compiled (rendered records" in table

    # Two GPUs cannot exist here: the same measured cells, as a pool would place them on two
    # GPUs, must be set side by side, and a gap beyond the margin called a disagreement.
    from quantbench.analysis import build_records
    from quantbench.store import Store

    module = _module()
    store = Store(tmp_path / "seed.db", create=False)
    measured = build_records(store, store.run_ids()[-1])
    for r in measured:
        r["card"] = "GPU"
    twins = [json.loads(json.dumps(r)) for r in measured if r["status"] == "ok"]
    for twin in twins:
        twin["info"]["placed_on"] = "cuda:1"
        twin["metrics"]["decode_tok_s"]["median"] *= 1.01
    for r in measured:
        r["info"]["placed_on"] = "cuda:0"
    lines = module.gpu_agreement(measured + twins)
    assert sum(line.endswith("| +1.0% | - | agree |") for line in lines) == len(twins)
    assert f"{len(twins)} cell(s) on two GPUs: they agree (largest gap 1.00%)." in lines
    twins[0]["metrics"]["decode_tok_s"]["median"] *= 1.05
    lines = module.gpu_agreement(measured + twins)
    assert any(" | - | no (+6." in line for line in lines)  # 1.01 x 1.05: a 6.05% gap
    assert any("they do not agree (largest gap 6.0" in line and "beyond the same-GPU spread"
               in line for line in lines)
    # The same cell in a second process on cuda:0, 20% apart from its first: the gap between
    # the GPUs (-3.6% now) lies inside how far that cell moves on one GPU, and is called so.
    again = json.loads(json.dumps(next(r for r in measured if _same(r, twins[0]))))
    again["metrics"]["decode_tok_s"]["median"] *= 1.20
    lines = module.gpu_agreement(measured + twins + [again])
    assert any(line.endswith("| -3.6% | 20.0% | within the spread: no GPU effect shown |") for line in lines)
    assert any("no gap exceeds how far the same cell moves between processes" in line
               for line in lines)
    use = "\n".join(module.gpu_use(measured + twins, []))
    assert "| cuda:0 |" in use and "| cuda:1 |" in use
    # A Ray task sees its GPU as cuda:0; the node's numbering in the cell's Ray record wins.
    on_ray = json.loads(json.dumps(twins[0])) | {"device": "cuda"}
    on_ray["info"] |= {"placed_on": "cuda:0", "ray": {"gpu_ids": ["1"]}}
    assert module._gpu(on_ray) == "cuda:1"
    # A sweep resumed on another lent machine: its cuda:0 is another card, told apart by the
    # UUIDs the cells' environments recorded (a Ray task's lists only its own GPU).
    here = {"gpus": [{"index": 0, "uuid": "GPU-aaaaaaaa-01"}, {"index": 1, "uuid": "GPU-bbbbbbbb-02"}]}
    there = {"gpus": [{"index": 0, "uuid": "GPU-cccccccc-03"}, {"index": 1, "uuid": "GPU-dddddddd-04"}]}
    first_machine = json.loads(json.dumps(measured[0])) | {"cell_env": here}
    second_machine = json.loads(json.dumps(measured[0])) | {"cell_env": there}
    assert module._gpu(first_machine) == "cuda:0 (GPU-aaaaaaaa)"
    assert module._gpu(second_machine) == "cuda:0 (GPU-cccccccc)"
    assert len(module.gpu_agreement([first_machine, second_machine])) > 0  # two GPUs, not one
    on_ray["cell_env"] = {"gpus": [{"index": 0, "uuid": "GPU-dddddddd-04"}]}
    assert module._gpu(on_ray) == "cuda:1 (GPU-dddddddd)"

    # A comparison measured again whole after an interruption leaves its first cells in the
    # database under the same positions: the renderer counts them as processes of their cell
    # (and as GPU time) without showing them in the tables.
    first = store.db.execute("SELECT cell_row, run_id, config, info, env_id FROM cells "
                             "ORDER BY cell_row LIMIT 1").fetchone()
    position = store.db.execute("SELECT position FROM run_cells WHERE cell_row=?",
                                (first[0],)).fetchone()[0]
    samples = {}
    for metric, value in store.db.execute("SELECT metric, value FROM samples WHERE cell_row=? "
                                          "ORDER BY idx", (first[0],)):
        samples.setdefault(metric, []).append(value * 2)
    store.add_cell(first[1], position, json.loads(first[2]),
                   {"status": "ok", "info": json.loads(first[3]), "metrics": samples}, first[4],
                   "2026-01-01T00:00:00+00:00", 1.0)
    store.close()
    records, _, _, superseded, plans = module._records([tmp_path / "seed.db"], [])
    assert len(superseded) == 1 and superseded[0]["scheme"] == json.loads(first[2])["scheme"]
    assert len(records) == len(measured) and plans[0]["finished"]


def _same(a: dict, b: dict) -> bool:
    return (a["scheme"], a["runtime"], a["workload"]) == (b["scheme"], b["runtime"], b["workload"])


def test_seed_table_bad_input_is_one_line(tmp_path):
    proc = _seed_table("--out", str(tmp_path / "y"), "--db", str(tmp_path / "none.db"), cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no database at")
    proc = _seed_table("--out", str(tmp_path / "y"), cwd=tmp_path)
    assert proc.returncode != 0 and "--db" in proc.stderr and "Traceback" not in proc.stderr
