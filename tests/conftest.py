import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# pytest-xdist runs two test files at once (pyproject's addopts). Their quantbench runs are one
# declared contention group: each counts the other's CPU time as its own run's, not as load that
# makes a cell unfit for reuse (the record keeps how much there was). One torch thread a
# process, or two workers' cells oversubscribe two cores and spin (a GPTQ cell ran 7 minutes).
_suite = os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else os.getpid()
os.environ.setdefault("QUANTBENCH_CONTENTION_GROUP", f"pytest-{_suite}")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
PLUGINS = str(Path(__file__).resolve().parent / "plugins")


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), PLUGINS,
                                                    env.get("PYTHONPATH")) if p)
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


def quantbench(*args, cwd, env=None, timeout=900) -> subprocess.CompletedProcess:
    """The real CLI in a real process, as a user would call it."""
    return subprocess.run([sys.executable, "-m", "quantbench", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env or cli_env(), timeout=timeout)


def export_json(cwd, db="quantbench.db", run=None) -> list:
    args = ["export", "--format", "json", "--db", db] + (["--run", run] if run else [])
    proc = quantbench(*args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# Quick cells: three timed runs (below the five a speed claim needs) and the baseline measured
# once; tests of the statistics rules (test_defensible.py) use the defaults.
TINY = ["--model", "random:tiny", "--prompt-tokens", "16", "--new-tokens", "6",
        "--warmup", "1", "--runs", "3", "--no-repeat-baseline"]


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


def _stranger_load_lock(tmp_path_factory, mode):
    # in the directory all xdist workers' temporary directories share
    path = tmp_path_factory.getbasetemp().parent / "stranger-load.lock"
    with open(path, "a") as lock:
        fcntl.flock(lock, mode)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def stranger_load_alone(tmp_path_factory):
    """For a test that loads the CPUs as a stranger to the suite's contention group: it waits
    for, and keeps out, every test that needs a cell reused (`reuse_expected`), whose cells its
    load would flag contended and so never reuse (CI, 2026-12-06 21:50)."""
    yield from _stranger_load_lock(tmp_path_factory, fcntl.LOCK_EX)


@pytest.fixture
def reuse_expected(tmp_path_factory):
    """For a test that needs a cell reused: never while a stranger's load runs."""
    yield from _stranger_load_lock(tmp_path_factory, fcntl.LOCK_SH)


@pytest.fixture(autouse=True, scope="session")
def _own_device_locks(tmp_path_factory):
    """The suite's runs lock devices among themselves, not against a user's run on this machine
    (nor does a user's run make the suite fail)."""
    os.environ["QUANTBENCH_LOCK_DIR"] = str(tmp_path_factory.mktemp("locks"))
    yield


@pytest.fixture(autouse=True)
def _gpu_tests_need_cuda(request):
    """A test marked gpu fails, not skips, where no GPU is visible: `pytest -m gpu` asked."""
    if request.node.get_closest_marker("gpu") is None:
        return
    import torch

    if not torch.cuda.is_available():
        pytest.fail("pytest -m gpu was asked for, but no CUDA GPU is visible")
