"""``fmi compare``: the fast memory against steering, in-context, codebook, iterated-value,
gradient-written and entropy-gated alternatives, on the same prompts and metrics."""
