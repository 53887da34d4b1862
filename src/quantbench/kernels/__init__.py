"""quantbench's own weight-only matmul kernel (Triton) and the formats it reads."""
