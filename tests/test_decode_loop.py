"""The eager decode loop generates exactly the greedy tokens HF generate does, EOS ignored."""

import torch

from quantbench import models
from quantbench.runtimes import eager


def test_greedy_tokens_match_hf_generate_and_length_is_fixed():
    model = models.load({"kind": "random", "preset": "tiny"}, torch.float32, "cpu", seed=3)
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(0))
    timing = eager.generate(model, ids, 9, "cpu")
    reference = model.generate(ids, max_new_tokens=9, min_new_tokens=9, do_sample=False,
                               eos_token_id=None, pad_token_id=0)
    assert timing.tokens == reference[:, 12:].tolist()
    assert len(timing.token_s) == 8 and all(t > 0 for t in timing.token_s)
    m = timing.metrics(batch=2, prompt_tokens=12, new_tokens=9)
    assert m["decode_tok_s"] == 2 * 8 / timing.decode_s
    assert m["prefill_tok_s"] == 2 * 12 / timing.ttft_s
    assert m["e2e_tok_s"] == 2 * 9 / (timing.ttft_s + timing.decode_s)
