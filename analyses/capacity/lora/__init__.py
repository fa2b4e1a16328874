"""A hand-rolled LoRA capacity probe: the parametric-memory baseline on a frozen model.

Each adapter adds ``(x @ A) @ B`` to the output of every decoder block's MLP output projection
(GPT-NeoX ``mlp.dense_4h_to_h``, Gemma-3 / Llama ``mlp.down_proj``). Only ``A`` and ``B`` train;
the base model's parameters never receive a gradient and stay bit-identical.

The modules: :mod:`.config` (the probe's settings), :mod:`.adapter` (the adapter and how its
hooks reach the model), :mod:`.base` (the frozen base's logits and gradient flags),
:mod:`.retention` (the KL term on unrelated prompts), :mod:`.train` (Adam on one adapter) and
:mod:`.tune` (the learning rate x steps grid and the choice of a point).
"""
