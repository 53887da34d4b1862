"""The eager decode loop generates exactly the greedy tokens HF generate does, EOS ignored."""

import pytest
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


def test_compiled_runtime_static_cache_matches_the_eager_loop_on_the_cpu():
    """torch.compile (fullgraph) of the static-cache step, here without CUDA graphs: same
    greedy tokens as the eager loop, compile time recorded apart, the missing graph explained."""
    from quantbench.runtimes import compiled

    model = models.load({"kind": "random", "preset": "tiny"}, torch.float32, "cpu", seed=3)
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(0))
    reference = eager.generate(model, ids, 9, "cpu").tokens
    decoder = compiled.CompiledDecoder(model, "cpu", batch=2, prompt_tokens=12, new_tokens=9)
    info = decoder.prepare(ids.tolist())
    assert info["compile"]["fullgraph"] and info["compile"]["graph_breaks"] == 0
    assert info["compile"]["seconds"] > info["compile"]["second_call_s"]
    assert info["cuda_graph"]["captured"] is False and "CUDA" in info["cuda_graph"]["reason"]
    for _ in range(2):  # the cache is reset between generations
        timing = decoder.generate(ids.tolist(), 9)
        assert timing.tokens == reference
        assert len(timing.token_s) == 8
    with pytest.raises(ValueError, match="longer than"):
        decoder.generate(torch.zeros((2, 13), dtype=torch.long).tolist(), 9)


def test_a_failed_capture_reports_the_operation_that_broke_it_not_only_the_aftermath():
    from quantbench.runtimes.compiled import _error_text

    def capture():
        try:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        finally:  # torch.cuda.graph's exit ends the capture and fails again
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")

    with pytest.raises(RuntimeError) as caught:
        capture()
    assert _error_text(caught.value) == (
        "RuntimeError: CUDA error: operation not permitted when stream is capturing (then "
        "RuntimeError: CUDA error: operation failed due to a previous error during capture)")
    assert _error_text(ValueError("alone")) == "ValueError: alone"
