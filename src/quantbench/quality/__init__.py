"""Quality against the baseline on identical tokens: perplexity, KL divergence, top-1 agreement,
RMS delta-p, and greedy generations side by side."""
