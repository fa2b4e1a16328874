"""``fmi capacity``: how recall degrades with memory size, against a LoRA parametric baseline."""
