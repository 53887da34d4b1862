"""Calibration text: token ids fixed in the parent, like the prompts and the quality plan, from a
part of the corpus neither of them reads."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from quantbench.errors import UsageError
from quantbench.prompts import DEFAULT_CORPUS, read_text

# Prompts start at 20 k characters and perplexity text at 200 k (quality/plan.py); calibration
# reads from 1 M, so that a scheme never tunes itself on what it is scored on.
CALIBRATION_OFFSET_CHARS = 1_000_000


def from_corpus(tokenizer, samples: int, length: int) -> dict:
    """`samples` consecutive, non-overlapping windows of `length` tokens of the default corpus."""
    path = DEFAULT_CORPUS
    if not path.is_file():
        raise UsageError(f"calibration text {path} is missing: run `apt-get install jargon-text`")
    text = read_text(path)
    # A shorter corpus (a user's own): its second half, still away from the prompts' start.
    offset = CALIBRATION_OFFSET_CHARS if len(text) > CALIBRATION_OFFSET_CHARS * 1.2 else len(text) // 2
    needed = samples * length
    ids = tokenizer(text[offset:offset + needed * 8], add_special_tokens=False)["input_ids"]
    if len(ids) < needed:
        raise UsageError(f"the calibration text ({path} from character {offset}) holds "
                         f"{len(ids)} tokens; {samples} samples x {length} tokens need {needed}: "
                         "ask for fewer (scheme settings samples=, length=)")
    rows = [ids[i * length:(i + 1) * length] for i in range(samples)]
    return _package(rows, f"{path}@{offset}")


def random_ids(vocab_size: int, samples: int, length: int, seed: int = 1) -> dict:
    """Random-weight models have no text to calibrate on: random ids keep the algorithm's cost
    (and so its timing and memory) real, and say so in the record."""
    rng = np.random.default_rng(seed)
    return _package(rng.integers(0, vocab_size, size=(samples, length)).tolist(),
                    f"random-ids:seed={seed}")


def _package(rows: list[list[int]], source: str) -> dict:
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    return {"source": source, "sha256": digest, "samples": len(rows),
            "length": len(rows[0]) if rows else 0, "ids": rows}


def for_model(resolved, tokenizer, samples: int, length: int) -> dict:
    """A model's calibration set: corpus text through its tokenizer, random ids for random
    weights (which have no tokenizer)."""
    if resolved.random_weights:
        return random_ids(resolved.vocab_size, samples, length)
    return from_corpus(tokenizer, samples, length)


def identity(calibration: dict) -> dict:
    """What decides a calibrated cell's weights, less the ids themselves (their hash stands in)."""
    return {key: calibration[key] for key in ("source", "sha256", "samples", "length")}
