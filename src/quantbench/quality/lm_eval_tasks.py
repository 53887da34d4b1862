"""lm-evaluation-harness tasks on a cell's own model (torch schemes), offline from local task
files: `--lm-eval-include DIR` holds task YAMLs whose `data_files` paths are relative to DIR."""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import os
import time
from pathlib import Path

from quantbench.errors import UsageError

INSTALL = "pip install 'quantbench[lm-eval]'"


def plan(tasks: list[str], include: str | None, limit: int | None) -> dict:
    """Validated in the parent: lm-eval present, the folder there, every task known."""
    if importlib.util.find_spec("lm_eval") is None:
        raise UsageError(f"--lm-eval-tasks needs lm-evaluation-harness: {INSTALL}")
    if include and not Path(include).expanduser().is_dir():
        raise UsageError(f"--lm-eval-include '{include}' is not a directory of task YAML files")
    if limit is not None and limit <= 0:
        raise UsageError(f"--lm-eval-limit must be a positive integer, got {limit}")
    from lm_eval.tasks import TaskManager

    include_path = str(Path(include).expanduser().resolve()) if include else None
    known = TaskManager(include_path=include_path).all_tasks
    for task in tasks:
        if task not in known:
            close = difflib.get_close_matches(task, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UsageError(f"unknown lm-eval task '{task}'{hint}: name a task of lm-eval or of "
                             "--lm-eval-include DIR")
    return {"tasks": list(tasks), "include": include_path, "limit": limit}


@contextlib.contextmanager
def _in(folder: str | None):
    before = os.getcwd()
    if folder:
        os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def evaluate(config: dict, model, tokenizer, device: str) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, device=device)
    with _in(config["include"]):
        out = simple_evaluate(model=lm, tasks=config["tasks"], limit=config["limit"],
                              task_manager=TaskManager(include_path=config["include"]),
                              log_samples=False, bootstrap_iters=1000, random_seed=0)
    results = {task: {k: v for k, v in values.items() if k not in ("name", "alias")}
               for task, values in out["results"].items()}
    import lm_eval

    return {"results": results, "lm_eval": lm_eval.__version__, "limit": config["limit"],
            "lm_eval_s": time.perf_counter() - start}
