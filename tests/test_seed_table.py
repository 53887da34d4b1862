"""benchmarks/seed_table.py end to end on the CPU (tiny preset): both runtimes through
`quantbench run`, one database, the Markdown table and a dashboard per run."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import cli_env

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "seed_table.py"


def _seed_table(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=900)


def test_seed_table_measures_both_runtimes_and_renders_them_side_by_side(tmp_path):
    out = tmp_path / "seed"
    proc = _seed_table("--out", str(out), "--sizes", "tiny", "--schemes", "bf16,torchao-int8wo",
                       "--device", "cpu", "--prompt-tokens", "16", "--new-tokens", "6",
                       "--runs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (out / "seed-table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| tiny |")]
    assert [row.split(" | ")[1] for row in rows] == ["bf16", "torchao-int8wo"]
    for row in rows:
        cells = row.split(" | ")
        assert float(cells[2].replace(",", "")) > 0 and float(cells[5].replace(",", "")) > 0
        assert "no graph: CUDA graphs need a CUDA device" in row
    assert rows[0].split(" | ")[3] == "1.00x" and rows[0].split(" | ")[6] == "1.00x"
    records = json.loads((out / "seed-table.json").read_text())
    compiled = [r for r in records if r["runtime"] == "compiled"]
    assert len(compiled) == 2 and all(r["compiled"]["compile"]["graph_breaks"] == 0 for r in compiled)
    assert len(list((out / "dashboards").glob("*.html"))) == 2

    # Rendering again reads the database and measures nothing.
    again = _seed_table("--out", str(out), "--render-only", cwd=tmp_path)
    assert again.returncode == 0 and "== tiny" not in again.stdout
    assert "| tiny | torchao-int8wo |" in (out / "seed-table.md").read_text()

    # Cells whose database was lost come back from an earlier seed-table.json; the database wins.
    lost = next(r for r in records if r["runtime"] == "compiled" and r["scheme"] != "bf16")
    lost = lost | {"scheme": "torchao-int4wo"}
    lost["metrics"] = lost["metrics"] | {"decode_tok_s": {"median": 12345.0}}
    stale = next(r for r in records if r["runtime"] == "compiled" and r["scheme"] == "bf16")
    stale = stale | {"metrics": stale["metrics"] | {"decode_tok_s": {"median": 99999.0}}}
    (tmp_path / "old.json").write_text(json.dumps([lost, stale]))
    merged = _seed_table("--out", str(out), "--render-only", "--no-reports",
                         "--records", str(tmp_path / "old.json"), cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    table = (out / "seed-table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| tiny | torchao-int4wo |"))
    assert row.split(" | ")[2] == "not run" and row.split(" | ")[5] == "12,345.0"
    assert "99,999" not in table and "tiny torchao-int4wo compiled (rendered records" in table


def test_seed_table_bad_input_is_one_line(tmp_path):
    proc = _seed_table("--out", str(tmp_path / "x"), "--sizes", "3b", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --sizes 3b not understood")
    proc = _seed_table("--out", str(tmp_path / "y"), "--render-only", cwd=tmp_path)
    assert proc.returncode != 0 and "no database" in proc.stderr
