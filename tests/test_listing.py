import json

from conftest import quantbench


def test_schemes_json_lists_every_scheme_with_its_reason(workdir):
    proc = quantbench("schemes", "--json", cwd=workdir)
    assert proc.returncode == 0
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    for row in rows.values():
        assert {"name", "backend", "bits", "devices", "available", "reason"} <= set(row)
        assert row["available"] == (row["reason"] == "")
    assert rows["fp32"]["available"] and rows["fp32"]["backend"] == "torch"
    assert not rows["torchao-float8wo"]["available"]  # this CPU machine
    assert "cuda" in rows["torchao-float8wo"]["reason"]
    assert rows["bnb-nf4"]["backend_version"]


def test_schemes_table_and_env(workdir):
    assert "torchao-int8wo" in quantbench("schemes", cwd=workdir).stdout
    env = json.loads(quantbench("env", "--json", cwd=workdir).stdout)
    assert env["cpu_cores_logical"] >= 1 and env["gpus"] == [] and env["libraries"]["torch"]
    md = quantbench("env", "--markdown", cwd=workdir).stdout
    assert md.startswith("| item | value |") and "| gpu | none |" in md
