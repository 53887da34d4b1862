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
    from quantbench.runtimes.static_decoder import CompiledDecoder

    model = models.load({"kind": "random", "preset": "tiny"}, torch.float32, "cpu", seed=3)
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(0))
    reference = eager.generate(model, ids, 9, "cpu").tokens
    decoder = CompiledDecoder(model, "cpu", batch=2, prompt_tokens=12, new_tokens=9)
    info = decoder.prepare(ids.tolist())
    assert info["compile"]["fullgraph"] and info["compile"]["graph_breaks"] == 0
    assert info["compile"]["seconds"] > info["compile"]["second_call_s"]
    assert info["cuda_graph"]["captured"] is False and "CUDA" in info["cuda_graph"]["reason"]
    assert info["compile"]["inductor"]["coordinate_descent_tuning"] is True
    assert info["compile"]["inductor"]["coordinate_descent_check_all_directions"] is False
    assert set(info["compile"]["fx_graph_cache"]) == {"hits", "misses"}
    # torch's static launcher drops tuning picks on an FX-cache hit (see inductor_setup.INDUCTOR)
    assert info["compile"]["inductor"]["use_static_cuda_launcher"] is False
    assert info["compile"]["tuning_s"] >= 0
    for _ in range(2):  # the cache is reset between generations
        timing = decoder.generate(ids.tolist(), 9)
        assert timing.tokens == reference
        assert len(timing.token_s) == 8
    with pytest.raises(ValueError, match="longer than"):
        decoder.generate(torch.zeros((2, 13), dtype=torch.long).tolist(), 9)


def test_the_runtime_owns_the_compiler_settings_not_the_scheme():
    """torchao's quantize_ turns on coordinate-descent tuning process-wide by default: its cells
    would compile with other settings (and for minutes longer) than their bf16 baseline. Through
    quantbench's schemes it leaves them alone; the runtime sets the tuning, the same for all."""
    import torch._inductor.config as inductor

    from quantbench.runtimes import get
    from quantbench.runtimes.inductor_setup import apply_inductor, inductor_settings
    from quantbench.schemes import get as get_scheme

    inductor.coordinate_descent_tuning = False
    for name in ("torchao-int8wo", "torchao-int4wo"):
        model = models.load({"kind": "random", "preset": "tiny"}, torch.float32, "cpu", seed=3)
        get_scheme(name).apply(model, "cpu")
        assert inductor.coordinate_descent_tuning is False, name
    assert [get(name).tuning for name in ("compiled-plain", "compiled", "compiled-tuned")] == [
        "plain", "one-direction", "all-directions"]
    applied = apply_inductor(inductor_settings("all-directions"))
    try:
        assert applied["coordinate_descent_check_all_directions"] is True
        assert inductor.coordinate_descent_tuning and inductor.coordinate_descent_check_all_directions
    finally:
        apply_inductor(inductor_settings("plain"))
    assert inductor.coordinate_descent_tuning is False


def test_a_failed_capture_reports_the_operation_that_broke_it_not_only_the_aftermath():
    from quantbench.runtimes.step_profile import first_and_last_error

    def capture():
        try:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        finally:  # torch.cuda.graph's exit ends the capture and fails again
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")

    with pytest.raises(RuntimeError) as caught:
        capture()
    assert first_and_last_error(caught.value) == (
        "RuntimeError: CUDA error: operation not permitted when stream is capturing (then "
        "RuntimeError: CUDA error: operation failed due to a previous error during capture)")
    assert first_and_last_error(ValueError("alone")) == "ValueError: alone"


def test_the_graph_check_accepts_argmax_ties_within_rounding_and_refuses_wrong_tokens():
    """A batch of random-weight rows can flip an argmax between two kernels: the check holds
    the graph's tokens to the uncompiled step's logits within rounding, not to its ids. Fed
    the step's own tokens it agrees; a token far from the best (a frozen host value) fails."""
    from quantbench.runtimes.static_decoder import CompiledDecoder

    model = models.load({"kind": "random", "preset": "tiny"}, torch.bfloat16, "cpu", seed=3)
    ids = torch.randint(0, 512, (8, 12), generator=torch.Generator().manual_seed(1))
    decoder = CompiledDecoder(model, "cpu", batch=8, prompt_tokens=12, new_tokens=9,
                              inductor=False)
    decoder.prepare(ids.tolist())
    tokens = torch.tensor(decoder.generate(ids.tolist(), 9).tokens)
    good = decoder.agreement(ids.tolist(), tokens, 8)
    assert good["within_tolerance"] and good["first_out_of_tolerance"] is None
    assert 0 <= good["worst_gap_over_allowed"] <= 1
    assert good["tolerance"]["rtol"] == pytest.approx(8 * torch.finfo(torch.bfloat16).eps)
    with torch.no_grad():  # the logits at step 3 for row 5: take their worst token instead
        decoder._prefill(ids.tolist())
        pos = decoder.pos.clone()
        for i in range(3):
            logits = decoder._forward_logits(tokens[:, i:i + 1], pos)
            pos = pos + 1
    wrong = tokens.clone()
    wrong[5, 3] = int(logits[5].argmin())
    bad = decoder.agreement(ids.tolist(), wrong, 8)
    assert not bad["within_tolerance"] and bad["first_out_of_tolerance"] == 3
    assert bad["worst_gap_over_allowed"] > 5


def _decoder_with_a_stand_in_graph(noisy_head: bool, freeze_a_token: bool):
    """A CPU decoder whose 'graph' replays the step itself (CUDA graphs need a GPU), so the
    check's own logic runs: optionally the replay writes a wrong token (a value frozen on the
    host), optionally the head adds fresh noise each call (kernels whose sums change order)."""
    from types import SimpleNamespace

    from quantbench.runtimes.static_decoder import CompiledDecoder

    model = models.load({"kind": "random", "preset": "tiny"}, torch.float32, "cpu", seed=3)
    if noisy_head:
        noise = torch.Generator().manual_seed(7)
        model.lm_head.register_forward_hook(
            lambda module, args, out: out + 10 * out.std() * torch.randn(
                out.shape, generator=noise, dtype=out.dtype))
    ids = torch.randint(0, 512, (4, 12), generator=torch.Generator().manual_seed(1)).tolist()
    decoder = CompiledDecoder(model, "cpu", batch=4, prompt_tokens=12, new_tokens=9,
                              inductor=False)
    decoder.prepare(ids)

    def replay():
        decoder._body()
        if freeze_a_token:
            wrong = (decoder.ids + 1) % 512
            decoder.ids.copy_(wrong)
            decoder.out.index_copy_(1, decoder.slot - 1, wrong)

    decoder.graph = SimpleNamespace(replay=replay)
    return decoder, ids


def test_a_refused_graph_says_whether_the_step_disagrees_with_itself():
    """A graph beyond the check's tolerance is refused either way; the record says why: a step
    that agrees with itself points at a value frozen into the graph, one that does not (a
    kernel whose split sums land in another order each run: gemlite's bf16 atomics on a
    quantized lm_head, 2026-12-06) cannot be told from a frozen value."""
    from quantbench.runtimes.static_decoder import refusal_reason

    with torch.no_grad():
        decoder, ids = _decoder_with_a_stand_in_graph(noisy_head=False, freeze_a_token=True)
        frozen = decoder._check(ids)
        decoder, ids = _decoder_with_a_stand_in_graph(noisy_head=True, freeze_a_token=False)
        noisy = decoder._check(ids)
        decoder, ids = _decoder_with_a_stand_in_graph(noisy_head=False, freeze_a_token=False)
        same = decoder._check(ids)
    assert same["identical"] and "step_against_itself" not in same
    assert not frozen["within_tolerance"] and frozen["first_difference"] == 1
    assert frozen["step_against_itself"] == {"within_tolerance": True,
                                             "worst_gap_over_allowed": 0.0,
                                             "first_out_of_tolerance": None}
    reason = refusal_reason(frozen)
    assert reason.endswith("agrees with itself: something the step computes on the host was "
                           "frozen into the graph"), reason
    assert not noisy["within_tolerance"]
    own = noisy["step_against_itself"]
    assert not own["within_tolerance"] and own["worst_gap_over_allowed"] > 1
    reason = refusal_reason(noisy)
    assert "does not agree with itself either" in reason and "cannot be told" in reason, reason
    assert f"{own['worst_gap_over_allowed']:.2f}x" in reason
    varies = {"worst_gap_over_allowed": 40.0, "step_against_itself": {
        "within_tolerance": True, "worst_gap_over_allowed": 0.3, "first_out_of_tolerance": None}}
    assert refusal_reason(varies).endswith("varies between runs too, but less (worst 0.30x the "
                                           "tolerance): something the step computes on the host "
                                           "was likely frozen into the graph")
