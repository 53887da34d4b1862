"""Prompt token ids for a run: real corpus text for real models, random ids for random ones.

Computed once in the parent so that every scheme of a run sees identical tokens.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np

from quantbench.errors import UsageError

DEFAULT_CORPUS = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
CORPUS_INSTALL = "apt-get install jargon-text"
# Skip the corpus's front matter (title page, licence, table of contents): prompts start in prose.
DEFAULT_OFFSET_CHARS = 20_000


def read_text(path: Path) -> str:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
                return fh.read()
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read prompt text '{path}': {exc.strerror or exc}") from None


def corpus_path(prompt_file: str | None) -> Path:
    if prompt_file:
        path = Path(prompt_file).expanduser()
        if not path.is_file():
            raise UsageError(f"--prompt-file '{prompt_file}' does not exist")
        return path
    if not DEFAULT_CORPUS.is_file():
        raise UsageError(f"the default corpus {DEFAULT_CORPUS} is missing: run `{CORPUS_INSTALL}` "
                         "or pass --prompt-file FILE")
    return DEFAULT_CORPUS


def _package(ids: list[list[int]], source: str) -> dict:
    digest = hashlib.sha256(json.dumps(ids).encode()).hexdigest()
    return {"source": source, "sha256": digest, "ids": ids}


def random_prompts(vocab_size: int, batch_size: int, prompt_tokens: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, size=(batch_size, prompt_tokens)).tolist()
    return _package(ids, f"random-ids:seed={seed}")


def corpus_prompts(tokenizer, path: Path, batch_size: int, prompt_tokens: int) -> dict:
    """`batch_size` consecutive, non-overlapping windows of `prompt_tokens` tokens."""
    text = read_text(path)
    offset = DEFAULT_OFFSET_CHARS if path == DEFAULT_CORPUS and len(text) > 2 * DEFAULT_OFFSET_CHARS else 0
    needed = batch_size * prompt_tokens
    chars = needed * 8
    while True:
        chunk = text[offset:offset + chars]
        ids = tokenizer(chunk, add_special_tokens=False)["input_ids"]
        if len(ids) >= needed or offset + chars >= len(text):
            break
        chars *= 2
    if len(ids) < needed:
        raise UsageError(f"'{path}' holds only {len(ids)} tokens; the workload needs {needed} "
                         "(batch size x prompt tokens): pass a longer --prompt-file or fewer tokens")
    rows = [ids[i * prompt_tokens:(i + 1) * prompt_tokens] for i in range(batch_size)]
    return _package(rows, f"{path}@{offset}")
