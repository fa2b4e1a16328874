"""``fmi compare``: the fast memory against steering, in-context, GRACE, iterated-value,
gradient-written and entropy-gated alternatives, on the same prompts and metrics."""
