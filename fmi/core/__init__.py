"""The frozen model's machinery: hook sites, hook factories, batched forward passes, prompts
and greedy decoding, and reproducible numerics."""
