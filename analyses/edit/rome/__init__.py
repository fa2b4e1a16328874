"""ROME (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"): a knowledge-
editing baseline that writes each fact as a rank-one update of one MLP output projection.

For one decoder block's MLP output Linear (Gemma-3 ``mlp.down_proj``, GPT-NeoX
``mlp.dense_4h_to_h``; found by :func:`analyses.capacity.lora.adapter.lora_targets`) an edit

1. reads the key ``k``: that Linear's input at the subject's last token of the rewrite prompt
   (:func:`.keys.subject_key`);
2. optimises the value ``v*``: the Linear's output there, ``W k + b + delta``, with ``delta``
   trained so that the model then gives ``target_new`` after the rewrite prompt, with a KL term
   that keeps the next-token distribution after ``"{subject} is a"`` (:func:`.value.target_value`);
3. writes ``W' = W + (v* - b - W k) uᵀ / (uᵀ k)``, ``u = C⁻¹ k``, where ``C = E[k kᵀ]`` is the
   keys' uncentred second moment over model-generated neutral text (:func:`.keys.key_covariance`,
   :func:`.keys.neutral_text`), so that ``W' k = v* - b`` and keys ``C⁻¹``-orthogonal to ``k``
   keep their outputs (:func:`.update.rank_one_update`).

:class:`.method.Rome` is the :class:`analyses.edit.method.Method`: edits one after another into
the weight, then restores it bit for bit on exit; :class:`.config.RomeConfig` holds its
hyperparameters. Written from the paper's equations, not from its code.
"""
