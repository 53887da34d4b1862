"""Quality against the baseline on identical tokens: correctness of the numbers, the cache, the
generations, and the refusals."""

import math
import shutil

import numpy as np
import pytest

from conftest import TINY, export_json, quantbench
from quantbench.quality import cache, metrics, plan

EVAL = ["--eval-tokens", "512", "--eval-context", "256", "--eval-stride", "128"]
FAST = ["--prompt-tokens", "32", "--new-tokens", "4", "--warmup", "0", "--runs", "1", "--log", "",
        "--no-repeat-baseline"]


# ---- the arithmetic, on its own -------------------------------------------------------------

@pytest.mark.parametrize("n,context,stride", [(512, 256, 128), (513, 256, 255), (100, 512, 256),
                                              (1000, 64, 7), (2, 2, 1)])
def test_every_token_but_the_first_is_scored_exactly_once(n, context, stride):
    scored = [t for w in metrics.plan_windows(n, context, stride) for t in w.targets]
    assert scored == list(range(1, n))
    for w in metrics.plan_windows(n, context, stride):
        assert w.end - w.begin <= context
        rows = metrics.window_rows(w)
        assert rows.stop - rows.start == len(w.targets)


def test_identical_distributions_score_zero_drift():
    rng = np.random.default_rng(0)
    logp = metrics.log_softmax(rng.normal(size=(50, 30)))
    targets = rng.integers(0, 30, size=50)
    scores = metrics.TokenScores.empty()
    scores.extend(logp, logp, targets)
    s = metrics.summarize(scores)
    assert s["kl_mean"] == 0 and s["kl_max"] == 0 and s["top1_agreement_pct"] == 100
    assert s["ppl_ratio"] == 1 and s["rms_dp_pct"] == 0
    # A different distribution drifts: KL > 0, by the textbook formula.
    other = metrics.log_softmax(rng.normal(size=(50, 30)))
    scores = metrics.TokenScores.empty()
    scores.extend(other, logp, targets)
    expected = (np.exp(logp) * (logp - other)).sum(-1).mean()
    assert metrics.summarize(scores)["kl_mean"] == pytest.approx(expected, rel=1e-5)


def test_cache_key_changes_with_everything_that_changes_the_logits():
    base = {"source": "a@0", "sha256": "x", "context": 512, "stride": 256,
            "generation": {}, "baseline": "fp32", "baseline_settings": {}}
    key = cache.key("model", base, "cpu", 0)
    assert key == cache.key("model", dict(base), "cpu", 0)
    for change in ({"context": 256}, {"stride": 128}, {"sha256": "y"}, {"baseline": "bf16"},
                   {"source": "b@0"}, {"baseline_settings": {"compute_dtype": "float16"}}):
        assert cache.key("model", {**base, **change}, "cpu", 0) != key, change
    assert cache.key("other-model", base, "cpu", 0) != key
    assert cache.key("model", base, "cuda", 0) != key


# ---- the bundled model, end to end -----------------------------------------------------------

@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    proc = quantbench("run", "--schemes", "fp32,bf16,torchao-int8wo,bnb-nf4,gguf-q8_0,qb-int8,"
                      "torchao-int4wo,qb-int4:group=64", *FAST, *EVAL, cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, {r["scheme"]: r for r in export_json(root)}


@pytest.mark.slow
def test_kl_orders_as_expected_and_the_baseline_does_not_drift(measured):
    _, by = measured
    kl = {name: by[name]["quality"]["kl_mean"] for name in by}
    assert kl["fp32"] == 0 and by["fp32"]["quality"]["top1_agreement_pct"] == 100
    assert kl["bnb-nf4"] > kl["torchao-int8wo"] > kl["bf16"] > 0
    # Significantly so: the 95% CIs do not overlap.
    ci = {name: by[name]["quality"]["kl_ci95"] for name in by}
    assert ci["bnb-nf4"][0] > ci["torchao-int8wo"][1] > ci["torchao-int8wo"][0] > ci["bf16"][1]
    for r in by.values():
        q = r["quality"]
        assert q["tokens_scored"] == 511 and q["context"] == 256 and q["stride"] == 128
        assert q["ppl_ci95"][0] < q["ppl"] < q["ppl_ci95"][1]
        assert q["kl_median"] <= q["kl_p99"] <= q["kl_max"]
        assert q["baseline"] == "fp32"


@pytest.mark.slow
def test_quantbench_kernels_schemes_drift_no_more_than_torchaos_at_equal_bits(measured):
    """At equal nominal bits, quantbench's formats drift no more than 10% above torchao's:
    qb-int8 is torchao-int8wo's format (per-row absmax); qb-int4 stores asymmetric groups of 64
    where torchao's CPU int4 is symmetric (measured: KL 0.40 vs 0.63), so it may drift less."""
    _, by = measured
    for ours, theirs in (("qb-int8", "torchao-int8wo"), ("qb-int4:group=64", "torchao-int4wo")):
        kl_ours, kl_theirs = by[ours]["quality"]["kl_mean"], by[theirs]["quality"]["kl_mean"]
        assert 0 < kl_ours <= 1.10 * kl_theirs, (ours, kl_ours, theirs, kl_theirs)
    assert by["qb-int8"]["quality"]["kl_mean"] > by["bf16"]["quality"]["kl_mean"]


@pytest.mark.slow
def test_gguf_quality_uses_llama_cpp_logits_on_the_same_tokens(measured):
    _, by = measured
    f32, q8 = by["gguf-f32"]["quality"], by["gguf-q8_0"]["quality"]
    # llama.cpp's fp32 computation of quantbench's F32 export: the torch fp32 distribution to
    # rounding; Q8_0 drifts more than that, and far less than a 4-bit scheme.
    assert f32["kl_mean"] < 1e-3 and f32["top1_agreement_pct"] > 99
    assert f32["kl_mean"] < q8["kl_mean"] < by["bnb-nf4"]["quality"]["kl_mean"]
    assert f32["ppl"] == pytest.approx(by["fp32"]["quality"]["ppl"], rel=1e-3)


@pytest.mark.slow
def test_perplexity_equals_the_models_own_loss_on_the_same_windows(measured):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantbench import models

    _, by = measured
    path = models.resolve("default").path
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = plan.build(tokenizer, plan.QualitySettings(eval_tokens=512, context=256, stride=128))["ids"]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    nll_sum, count = 0.0, 0
    with torch.no_grad():
        for w in metrics.plan_windows(len(ids), 256, 128):
            window = torch.tensor([ids[w.begin:w.end]])
            labels = window.clone()
            labels[0, : w.first_target - w.begin] = -100  # tokens scored by earlier windows
            n = w.end - w.first_target
            nll_sum += model(input_ids=window, labels=labels).loss.item() * n
            count += n
    assert count == 511
    independent = math.exp(nll_sum / count)
    assert by["fp32"]["quality"]["ppl"] == pytest.approx(independent, rel=1e-3)


@pytest.mark.slow
def test_reports_show_quality_and_generations(measured):
    root, by = measured
    table = quantbench("export", "--format", "md", cwd=root).stdout
    assert "PPL [95% CI]" in table and "KL ± SE" in table and "### Generations" in table
    assert "Drift from the baseline, least first: gguf-f32 KL" in table and "bf16 KL" in table
    assert "not to the original checkpoint" in table
    csv_head = quantbench("export", "--format", "csv", cwd=root).stdout.splitlines()[0]
    assert "kl_mean" in csv_head and "ppl_ci95_low" in csv_head and "top1_agreement_pct" in csv_head
    shown = quantbench("generations", cwd=root)
    assert shown.returncode == 0, shown.stderr
    assert "fp32 (baseline)" in shown.stdout and "A hacker is a person who" in shown.stdout
    for r in by.values():
        gens = r["quality"]["generations"]
        assert len(gens) == 4 and all(len(g["ids"]) == 32 for g in gens)
    assert all(g["ids"] == b["ids"] for g, b in zip(by["gguf-f32"]["quality"]["generations"],
                                                     by["fp32"]["quality"]["generations"])) or \
        by["gguf-f32"]["quality"]["kl_max"] > 0  # identical greedy text unless numerics moved


@pytest.mark.slow
def test_cached_baseline_reused_and_rebuilt_when_missing(measured, tmp_path, reuse_expected):
    root, by = measured
    cache_file = by["fp32"]["quality"]["baseline_cache"]
    assert cache_file.endswith(".npy")
    stored = np.load(cache_file, mmap_mode="r")
    assert stored.dtype == np.float32 and stored.shape == (511, 49152)
    # The baseline measured again reads the cache its first run wrote: zero drift from itself.
    proc = quantbench("run", "--schemes", "fp32", "--force", *FAST, *EVAL, cwd=root)
    assert proc.returncode == 0, proc.stderr
    again = export_json(root)[0]["quality"]
    assert again["kl_max"] < 1e-6 and again["top1_agreement_pct"] == 100
    # Cache gone and the baseline cell reused: the new scheme's cell rebuilds it first.
    shutil.move(cache_file, tmp_path / "saved.npy")
    proc = quantbench("run", "--schemes", "fp32,hqq-int8", "--reuse-baseline", *FAST, *EVAL, cwd=root)
    assert proc.returncode == 0, proc.stderr
    base, hqq = export_json(root)
    assert base["reused"] and not hqq["reused"]
    assert hqq["quality"]["kl_mean"] > 0 and "error" not in hqq["quality"]
    assert np.array_equal(np.load(cache_file), np.load(tmp_path / "saved.npy"))


# ---- refusals --------------------------------------------------------------------------------

def test_quality_on_random_weights_is_refused_in_one_line(workdir):
    proc = quantbench("run", *TINY, "--quality", cwd=workdir)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "random weights" in proc.stderr and not (workdir / "quantbench.db").exists()
    proc = quantbench("run", *TINY, "--schemes", "fp32", "--log", "", cwd=workdir)
    assert proc.returncode == 0 and "quality not measured: random weights" in proc.stdout
    assert export_json(workdir)[0]["quality"] is None


@pytest.mark.parametrize("args,message", [
    (["--eval-text", "missing.txt"], "--eval-text 'missing.txt' does not exist"),
    (["--eval-stride", "512"], "not smaller than --eval-context"),
    (["--eval-tokens", "0"], "--eval-tokens must be a positive integer"),
    (["--eval-context", "100000"], "exceeds the model's context"),
])
def test_bad_quality_settings_fail_in_one_line(workdir, args, message):
    proc = quantbench("run", "--schemes", "fp32", *args, cwd=workdir)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not (workdir / "quantbench.db").exists()


def test_eval_text_too_short_is_refused(workdir):
    (workdir / "short.txt").write_text("only a few words here")
    proc = quantbench("run", "--schemes", "fp32", "--eval-text", "short.txt", cwd=workdir)
    assert proc.returncode == 2 and "--eval-tokens asks for 2048" in proc.stderr


# ---- lm-evaluation-harness, offline from a local task -----------------------------------------

LM_EVAL_DIR = str(__import__("pathlib").Path(__file__).parent / "data" / "lm_eval")


@pytest.mark.slow
def test_lm_eval_task_runs_on_each_cells_model_and_is_stored(workdir):
    pytest.importorskip("lm_eval")
    proc = quantbench("run", "--schemes", "fp32,torchao-int8wo", "--no-quality", *FAST,
                      "--lm-eval-tasks", "qb_capitals", "--lm-eval-include", LM_EVAL_DIR, cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for r in export_json(workdir):
        result = r["lm_eval"]["results"]["qb_capitals"]
        assert 0 <= result["acc,none"] <= 1 and result["sample_len"] == 8
        assert r["quality"] is None
    md = quantbench("export", "--format", "md", cwd=workdir).stdout
    assert "### lm-evaluation-harness" in md and "| fp32 | qb_capitals | acc |" in md


def test_unknown_lm_eval_task_is_refused_in_one_line(workdir):
    pytest.importorskip("lm_eval")
    proc = quantbench("run", "--schemes", "fp32", "--lm-eval-tasks", "qb_capitalz",
                      "--lm-eval-include", LM_EVAL_DIR, cwd=workdir)
    assert proc.returncode == 2 and "did you mean qb_capitals" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
