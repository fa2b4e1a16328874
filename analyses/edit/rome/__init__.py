"""ROME (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"): a knowledge-
editing baseline that writes each fact as a rank-one update of one MLP output projection, run
as its authors run it (github kmeng01/rome, GPT-2 XL settings; :mod:`.config` names the source
of every default and lists each difference in ``PAPER_VS_FMI``).

For one decoder block's MLP output Linear (Gemma-3 ``mlp.down_proj``, GPT-NeoX
``mlp.dense_4h_to_h``; found by :func:`analyses.capacity.lora.adapter.lora_targets`) an edit

1. reads the key: that Linear's input at the subject's last token of the rewrite prompt, bare
   (``k``) and after each of 20 short prefixes the model writes (their mean ``k_avg``;
   :func:`.keys.subject_keys`, :func:`.keys.context_prefixes`);
2. optimises ``delta``, added to the Linear's output at the subject's last token of all 21
   prompts, so that the model then gives ``target_new`` after them, with a KL term on
   ``"{subject} is a"`` and a weight decay (:func:`.value.target_value`);
3. writes ``W' = W + delta uᵀ / (uᵀ k)``, ``u = C⁻¹ k_avg``, where ``C = E[k kᵀ]`` is the keys'
   uncentred second moment over 100,000 tokens of model-written text, cached on disk
   (:func:`.covariance.covariances`; :func:`.update.rank_one_update`).

:class:`.method.Rome` is the :class:`analyses.edit.method.Method`: edits one after another into
the weight, then restores it bit for bit on exit. Written from the paper's equations and the
authors' published settings, not from their code.
"""
