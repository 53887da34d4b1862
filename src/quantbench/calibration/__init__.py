"""Calibrated weight quantization (GPTQ, AWQ): statistics of real activations, gathered one
decoder layer at a time, choose the int4 values; the values then live in the same torchao
tensors (and run on the same kernels) as round-to-nearest at equal bits."""
