"""Bad input: one clear line on stderr, exit 2, no traceback, nothing written."""

import json

import pytest

from conftest import TINY, cli_env, quantbench


def _assert_clean_refusal(proc, workdir, needle):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (workdir / "quantbench.db").exists()
    assert not (workdir / "quantbench-results").exists()
    assert not (workdir / "experiments").exists()


@pytest.mark.parametrize("args,needle", [
    (["--schemes", "fp32,int3-magic"], "unknown scheme 'int3-magic'"),
    (["--schemes", "torchao-float8wo"], "cannot run on cpu"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--runs", "0"], "--runs must be a positive integer"),
    (["--new-tokens", "0"], "--new-tokens must be a positive integer"),
    (["--prompt-tokens", "-3"], "--prompt-tokens must be a positive integer"),
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--warmup", "-1"], "--warmup must be 0 or more"),
    (["--prompt-tokens", "2000", "--new-tokens", "100"], "exceeds the model's context of 2048"),
    (["--runs", "many"], "--runs must be a positive integer or 'auto', got 'many'"),
    (["--runtime", "warp"], "--runtime 'warp' is not available"),
    (["--cell-timeout", "0"], "--cell-timeout must be positive"),
])
def test_bad_run_flags(workdir, args, needle):
    proc = quantbench("run", "--model", "random:tiny", *args, cwd=workdir)
    _assert_clean_refusal(proc, workdir, needle)


def test_missing_model_path(workdir):
    proc = quantbench("run", "--model", "./no/such/model", cwd=workdir)
    _assert_clean_refusal(proc, workdir, "does not exist")


def test_a_file_that_is_not_gguf(workdir):
    fake = workdir / "weights.gguf"
    fake.write_bytes(b"PK\x03\x04 definitely a zip")
    proc = quantbench("run", "--model", str(fake), cwd=workdir)
    _assert_clean_refusal(proc, workdir, "is not a GGUF file")


def test_directory_without_config(workdir):
    (workdir / "empty").mkdir()
    proc = quantbench("run", "--model", str(workdir / "empty"), cwd=workdir)
    _assert_clean_refusal(proc, workdir, "no readable config.json")


def test_hub_id_offline(workdir):
    proc = quantbench("run", "--model", "someone/some-model-that-is-not-cached", cwd=workdir,
                      env=cli_env(HF_HUB_OFFLINE="1", HF_HOME=str(workdir / "hf")))
    _assert_clean_refusal(proc, workdir, "Hugging Face Hub is not reachable")


def test_unknown_preset(workdir):
    proc = quantbench("run", "--model", "random:llama-99b", cwd=workdir)
    _assert_clean_refusal(proc, workdir, "unknown preset 'llama-99b'")


def test_unwritable_db(workdir):
    (workdir / "adir").mkdir()
    proc = quantbench("run", *TINY, "--db", str(workdir / "adir"), "--schemes", "fp32", cwd=workdir)
    assert proc.returncode == 2 and "--db" in proc.stderr and "is a folder: pass a file path" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--prompt-file", "--eval-text"])
def test_a_missing_text_file_is_refused_before_the_model_is_converted(workdir, flag):
    """An empty cache: resolving the bundled model would convert it first (a minute, and a
    line on stderr); the typo is refused before that."""
    env = cli_env(QUANTBENCH_CACHE=str(workdir / "empty-cache"))
    proc = quantbench("run", "--model", "default", flag, "nope.txt", cwd=workdir, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: {flag} 'nope.txt' does not exist" + (
        ": pass a text file\n" if flag == "--eval-text" else "\n")
    assert not (workdir / "empty-cache" / "models").exists()


def test_export_from_a_missing_database(workdir):
    proc = quantbench("export", "--format", "json", "--db", "nothing.db", cwd=workdir)
    assert proc.returncode == 2 and "no results database" in proc.stderr
    assert not (workdir / "nothing.db").exists()


def test_export_bad_format(workdir):
    proc = quantbench("export", "--format", "xml", cwd=workdir)
    assert proc.returncode == 2 and "--format 'xml' is not supported" in proc.stderr


def test_scheme_whose_library_is_missing(workdir):
    proc = quantbench("run", "--model", "random:tiny", "--schemes", "fp32,test-needs-missing-lib",
                      cwd=workdir, env=cli_env(QUANTBENCH_PLUGINS="qb_test_plugins"))
    _assert_clean_refusal(proc, workdir, "pip install 'quantbench[qbmissing]'")
    listed = quantbench("schemes", "--json", cwd=workdir,
                        env=cli_env(QUANTBENCH_PLUGINS="qb_test_plugins"))
    row = next(r for r in json.loads(listed.stdout) if r["name"] == "test-needs-missing-lib")
    assert row["available"] is False and "qb-no-such-dist" in row["reason"]
