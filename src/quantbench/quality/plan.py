"""What quality is measured on, fixed in the parent so every cell of a run sees the same tokens."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from quantbench.errors import UsageError
from quantbench.prompts import DEFAULT_CORPUS, read_text

# Perplexity text starts far from the prompts (which start at 20 k characters) and the front matter.
DEFAULT_EVAL_OFFSET_CHARS = 200_000

# A fixed small set: plain-text openings a reader can judge, the same for every model.
GENERATION_PROMPTS = (
    "The Jargon File is a glossary of",
    "A hacker is a person who",
    "To compute the factorial of a number in Python,",
    "The capital of France is",
)


@dataclass(frozen=True)
class QualitySettings:
    eval_text: str | None = None
    eval_tokens: int = 2048
    context: int = 512
    stride: int = 256
    generation_tokens: int = 32

    def validate(self, max_context: int | None) -> None:
        for flag, value in (("--eval-tokens", self.eval_tokens), ("--eval-context", self.context),
                            ("--eval-stride", self.stride)):
            if not isinstance(value, int) or value <= 0:
                raise UsageError(f"{flag} must be a positive integer, got {value!r}")
        if self.eval_tokens < 2:
            raise UsageError("--eval-tokens must be at least 2: perplexity needs a token to predict")
        if self.stride >= self.context:
            raise UsageError(f"--eval-stride {self.stride} is not smaller than --eval-context "
                             f"{self.context}: windows must overlap by at least one token or the "
                             "first token of each would go unscored; use a smaller stride")
        if max_context is not None and self.context > max_context:
            raise UsageError(f"--eval-context {self.context} exceeds the model's context of "
                             f"{max_context} tokens: lower it")
        if self.eval_text and not Path(self.eval_text).expanduser().is_file():
            raise UsageError(f"--eval-text '{self.eval_text}' does not exist: pass a text file")


def build(tokenizer, settings: QualitySettings) -> dict:
    """Token ids for perplexity and the generation prompts, with their provenance."""
    if settings.eval_text:
        path = Path(settings.eval_text).expanduser()
        offset = 0
    else:
        path = DEFAULT_CORPUS
        if not path.is_file():
            raise UsageError(f"the default evaluation text {path} is missing: run `apt-get install "
                             "jargon-text` or pass --eval-text FILE")
        offset = DEFAULT_EVAL_OFFSET_CHARS
    text = read_text(path)
    if offset and len(text) < 2 * offset:
        offset = 0
    chars = settings.eval_tokens * 8
    while True:
        ids = tokenizer(text[offset:offset + chars], add_special_tokens=False)["input_ids"]
        if len(ids) >= settings.eval_tokens or offset + chars >= len(text):
            break
        chars *= 2
    if len(ids) < settings.eval_tokens:
        raise UsageError(f"'{path}' holds only {len(ids)} tokens from character {offset}; "
                         f"--eval-tokens asks for {settings.eval_tokens}: pass a longer "
                         "--eval-text or fewer tokens")
    ids = ids[:settings.eval_tokens]
    prompts = [{"text": t, "ids": tokenizer(t, add_special_tokens=False)["input_ids"]}
               for t in GENERATION_PROMPTS]
    return {"source": f"{path}@{offset}", "sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
            "eval_tokens": settings.eval_tokens, "context": settings.context,
            "stride": settings.stride, "ids": ids,
            "generation": {"new_tokens": settings.generation_tokens, "prompts": prompts},
            "perplexity": "token-level (the model's own tokens), not lm-eval's word-level"}


def identity(quality: dict, baseline: str, baseline_settings: dict) -> dict:
    """What decides a cell's quality figures: the tokens (by hash), windows, and the baseline."""
    return {"source": quality["source"], "sha256": quality["sha256"],
            "context": quality["context"], "stride": quality["stride"],
            "generation": {"new_tokens": quality["generation"]["new_tokens"],
                           "prompts": [p["text"] for p in quality["generation"]["prompts"]]},
            "baseline": baseline, "baseline_settings": baseline_settings}
