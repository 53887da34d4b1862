"""Runtimes drive generation; the scheme decides how weights are stored, the runtime how the
decode loop runs, so that comparisons stay like with like."""

RUNTIMES = {
    "eager": "a plain Python decode loop over the HF model with a dynamic KV cache "
             "(what most people run)",
    "compiled": "static KV cache, prefill apart, each decode step torch.compile'd and replayed "
                "as one CUDA graph (checked per cell; on the CPU: compiled, no graph)",
}
