"""MEMIT (Meng et al. 2023, "Mass-Editing Memory in a Transformer") and AlphaEdit (Fang et al.
2025, "AlphaEdit: Null-Space Constrained Knowledge Editing for Language Models"): batches of
edits written into the MLP output projections of several consecutive early-middle blocks, run
as their authors run them (GPT-J settings; :mod:`.config` names the source of every default and
lists each difference in ``PAPER_VS_FMI``).

:mod:`.update` holds the closed forms (MEMIT's ``ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹``, AlphaEdit's
projected ``ΔW = R Kᵀ P (K_p K_pᵀ P + K Kᵀ P + α I)⁻¹`` and its projector), :mod:`.states` what
is read between writes, :mod:`.method` the :class:`analyses.edit.method.Method` classes
``Memit`` (batched, or sequential with ``batch_size``) and ``AlphaEdit``. The key covariance,
the keys, the context prefixes and the target optimisation are ROME's
(:mod:`analyses.edit.rome`). Written from the papers' equations and the authors' published
settings, not from their code.
"""
