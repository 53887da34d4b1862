"""Experiment log, dashboards, compare and exports: all views of the same database."""

import json
import shutil
import sqlite3
import subprocess

import pytest

from conftest import TINY, export_json, quantbench

EVIL = "<img src=x onerror=alert(1)> | </script><script>alert(2)</script>"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Two runs of a tiny model in one database, the first with a hostile --purpose."""
    root = tmp_path_factory.mktemp("reports")
    first = quantbench("run", *TINY, "--schemes", "fp32,bf16,torchao-int8wo", "--purpose", EVIL,
                       cwd=root)
    assert first.returncode == 0, first.stderr
    second = quantbench("run", *TINY, "--schemes", "fp32,bf16", "--force", cwd=root)
    assert second.returncode == 0, second.stderr
    runs = [r[0] for r in sqlite3.connect(root / "quantbench.db").execute(
        "SELECT run_id FROM runs ORDER BY rowid")]
    return root, runs


def test_each_run_appends_a_log_entry_and_log_rebuilds_the_same(measured):
    root, runs = measured
    appended = (root / "experiments" / "LOG.md").read_text()
    assert appended.count("## Experiment ") == 2
    for field in ("**Date:**", "**Purpose:**", "**Model:**", "**Hardware:**", "**Configuration:**",
                  "### Results", "### Summary", "### Files"):
        assert field in appended
    assert f"## Experiment 1: run {runs[0]}" in appended and f"## Experiment 2: run {runs[1]}" in appended
    assert "2+ warm-up" not in appended and "1+ warm-up (until steady, at most 10) + 3 timed runs" in appended
    assert "| fp32 (baseline) | ok |" in appended
    assert f"{runs[0]}.json" in appended and f"{runs[0]}.csv" in appended
    # No raw HTML from a user's string reaches the Markdown.
    import re

    prose = re.sub(r"`[^`]*`", "", appended)  # code spans show text literally: safe
    assert "<img" not in prose and "&lt;img src=x onerror=alert(1)&gt;" in prose
    rebuilt = quantbench("log", cwd=root)
    assert rebuilt.returncode == 0 and rebuilt.stdout == appended
    out = quantbench("log", "--out", "experiments/LOG.md", cwd=root)
    assert out.returncode == 0 and "kept the previous log" in out.stderr
    assert len(list((root / "experiments").glob("LOG.md.bak-*"))) == 1


def test_summary_states_significance_and_memory(measured):
    root, runs = measured
    md = quantbench("export", "--format", "md", "--run", runs[0], cwd=root).stdout
    assert "Weight memory vs fp32: bf16 50% smaller" in md
    assert "Random weights: these figures are valid for speed and memory only." in md
    # Three timed runs are too few for a speed claim: the summary says so rather than guess.
    assert "No claim against fp32 (fewer than 5 timed runs): bf16" in md
    assert "The baseline was measured once: no drift check" in md


def test_sql_export_loads_into_sqlite(measured, tmp_path):
    root, runs = measured
    sql = quantbench("export", "--format", "sql", "--run", runs[0], cwd=root).stdout
    db = sqlite3.connect(tmp_path / "loaded.db")
    db.executescript(sql)
    records = export_json(root, run=runs[0])
    assert db.execute("SELECT COUNT(*) FROM quantbench").fetchone()[0] == len(records)
    median = db.execute("SELECT decode_tok_s_median FROM quantbench WHERE scheme='bf16'").fetchone()[0]
    assert median == pytest.approx(records[1]["metrics"]["decode_tok_s"]["median"])
    n = sum(len(s["samples"]) for r in records for s in r["metrics"].values())
    assert db.execute("SELECT COUNT(*) FROM quantbench_samples").fetchone()[0] == n


def test_jsonl_is_one_record_per_line(measured):
    root, runs = measured
    lines = quantbench("export", "--format", "jsonl", "--run", runs[0], cwd=root).stdout.splitlines()
    assert [json.loads(line) for line in lines] == export_json(root, run=runs[0])


def test_compare_two_runs_and_two_databases(measured, tmp_path):
    root, runs = measured
    proc = quantbench("compare", runs[0], runs[1], "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["scheme"] for r in rows] == ["fp32", "bf16"]  # int8 only in run A
    decode = rows[0]["metrics"]["decode_tok_s"]
    assert decode["ratio"] == pytest.approx(decode["b"] / decode["a"])
    assert decode["ci95"][0] <= decode["ratio"] <= decode["ci95"][1]
    assert isinstance(decode["significant"], bool)
    shutil.copy(root / "quantbench.db", tmp_path / "other.db")
    table = quantbench("compare", runs[0], runs[1][:-3], "--db-b", str(tmp_path / "other.db"), cwd=root)
    assert table.returncode == 0 and "B/A" in table.stdout
    missing = quantbench("compare", runs[0], "nope", cwd=root)
    assert missing.returncode == 2 and "run 'nope' not found" in missing.stderr


def _chromium(page, profile):
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: apt-get install chromium (the README's test command does)"
    proc = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    return proc.stdout, console


def test_console_check_catches_a_broken_page(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction()</script></body></html>")
    _, console = _chromium(bad, tmp_path / "profile")
    assert console and "undefinedFunction" in console[0]


def test_dashboards_render_every_panel_with_no_console_errors(measured, tmp_path):
    root, runs = measured
    proc = quantbench("report", "--run", runs[0], "--out", "reports", cwd=root)
    assert proc.returncode == 0, proc.stderr
    png = root / "reports" / f"{runs[0]}-dashboard.png"
    page = root / "reports" / f"{runs[0]}-dashboard.html"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(png).shape[:2]
    assert width > 1000 and height > 500
    text = page.read_text()
    assert "onerror=alert(1)" not in text.replace("&lt;img src=x onerror=alert(1)&gt;", "")
    assert "<script>alert(2)" not in text
    assert "<script src=" not in text and "<link " not in text  # self-contained: nothing fetched
    dom, console = _chromium(page, tmp_path / "profile")
    assert console == [], console
    import re

    panels = re.findall(r'id="panel-([a-z_]+)"', dom)
    assert panels == ["speed", "memory", "speedup", "gpu_util", "memory_reduction", "size_speed",
                      "quality_speed", "quality_bits", "roofline"]
    for name in panels:
        start = dom.index(f'id="panel-{name}"')
        assert "main-svg" in dom[start:start + 5000], f"panel {name} did not render"
    assert "CPU run: there is no GPU to measure" in dom  # an empty panel says why
    assert "<img src=\"x\"" not in dom  # the hostile purpose stayed text
    assert 'id="data"' in dom and "torchao-int8wo" in dom
    # The data table is the Markdown view's (one column spec): megabytes and verdicts, not raw bytes.
    table = dom[dom.index('id="data"'):]
    assert "weights MB" in table and "speedup [95% CI]" in table and "runs + warm-ups" in table
    weights = export_json(root, run=runs[0])[2]["memory"]["weights_bytes"]
    assert str(weights) not in table and f"{weights / 1e6:,.1f}" in table
    # A second report never overwrites the first.
    again = quantbench("report", "--run", runs[0], "--out", "reports", cwd=root)
    assert again.returncode == 0 and (root / "reports" / f"{runs[0]}-dashboard-2.html").exists()


def test_one_column_spec_drives_every_view(measured, monkeypatch):
    """A new metric is one Column: the terminal table, Markdown, HTML and CSV all show it."""
    import io

    from rich.console import Console

    from quantbench.report import columns, exports, html, markdown, table

    root, runs = measured
    records = export_json(root, run=runs[0])
    extra = columns.Column("cells_per_byte", "cells/MB",
                           lambda r: f"{1e6 / r['memory']['weights_bytes']:.6f}",
                           lambda r: {"cells_per_byte": 1 / r["memory"]["weights_bytes"]}, brief=True)
    monkeypatch.setattr(columns, "COLUMNS", columns.COLUMNS + [extra])
    want = f"{1e6 / records[0]['memory']['weights_bytes']:.6f}"
    console = Console(width=400, file=io.StringIO(), record=True)
    table.print_comparison(console, records)
    text = console.export_text()
    assert "cells/MB" in text and want in text
    assert "| cells/MB |" in markdown.results_table(records) and want in markdown.results_table(records)
    assert "<th>cells/MB</th>" in html._table(records) and want in html._table(records)
    head, first = exports.to_csv(records).splitlines()[:2]
    assert head.endswith(",cells_per_byte") and first.split(",")[-1] == repr(
        1 / records[0]["memory"]["weights_bytes"])
    # A column that is not brief stays out of the terminal but not out of Markdown.
    monkeypatch.setattr(columns, "COLUMNS", columns.COLUMNS[:-1] + [
        columns.Column("wide_only", "only-in-documents", lambda r: "doc", brief=False)])
    console = Console(width=400, file=io.StringIO(), record=True)
    table.print_comparison(console, records)
    assert "only-in-documents" not in console.export_text()
    assert "| only-in-documents |" in markdown.results_table(records)


def test_a_compiled_cell_that_fell_back_to_eager_kernels_says_so_in_its_row(measured):
    """The compiled runtime measures the step's eager kernels when the compile fails (the
    record's compile.error): the terminal row must say so, or the cell passes for compiled.
    On an H100 every compiled-qb cell did this (2026-12-06) with nothing in the table but a
    compile time of 0 s."""
    import copy
    import io

    from rich.console import Console

    from quantbench.report import table

    root, runs = measured
    records = export_json(root, run=runs[0])
    # Only the fallback note is in question: a shared host may flag these rows as contended.
    assert not any("eager kernels" in table.note_text(r) for r in records)
    fell_back = copy.deepcopy(records[1])
    fell_back["info"]["compiled"] = {  # as runtimes/static_decoder.py writes it
        "compile": {"backend": "inductor", "error": "Unsupported: Bad import result",
                    "seconds": 0.3, "consequence": "the step's eager kernels are used instead"},
        "cuda_graph": {"captured": True, "replays_per_token": 1}}
    note = table.note_text(fell_back)
    # The row may also say it was contended (a shared host): the fallback is its own part.
    assert "not compiled (Unsupported: Bad import result): eager kernels measured" in note.split("; ")
    console = Console(width=200, file=io.StringIO(), record=True)
    table.print_comparison(console, [records[0], fell_back])
    assert "eager kernels measured" in " ".join(console.export_text().split())
