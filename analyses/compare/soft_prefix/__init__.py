"""GradMem as its paper describes it: a soft prefix of ``K`` memory tokens written by gradient.

GradMem compresses a context into a few *memory tokens*: ``K`` input embeddings, prepended to
the model's input, optimised by a handful of gradient steps so that the model, reading only the
memory, reproduces what the context says. Here the context is a split's write statements, all of
them at once: the prefix ``P`` (``[K, d_model]``) starts from a seeded draw at the scale of real
token embeddings and takes Adam steps on the mean cross-entropy of every statement's label token
at its answer position (``write_prompt`` and the entries' targets, as
:mod:`analyses.compare.gradmem`
uses), with ``P`` prepended to each statement. The memory is then read with no retrieval: the
same ``P`` is prepended to every evaluation query (write, read, plain and unrelated prompts
alike: it is always on) and greedy decoding runs as in every other row.

Frozen: every model parameter. Gradients flow through the whole network into ``P`` alone
(:func:`torch.autograd.grad` with ``P`` as the only input; tests check the weights stay
bit-identical and no parameter gets a ``.grad``). Nothing else is learned.

Prepending (:mod:`.prepend`). Texts are tokenized and left-padded by
:func:`fmi.core.prompts.encode` through :class:`~.prepend.PrefixTokenizer`, which inserts ``K``
placeholder ids (the pad id) right before each text's first real token: after a ``<bos>`` the
tokenizer prepends (Gemma-3), at the start otherwise (Pythia, SmolLM2). The attention mask
covers them, so positions and attention see ``K`` ordinary tokens.
:func:`~.prepend.prefix_hook`, at ``hook_embed`` (the embedding's output; on Gemma-3 after its
``sqrt(d_model)`` scale, measured in the tests), overwrites those ``K`` positions of every row
by ``P`` on the prompt pass, and leaves KV-cached steps alone. ``P`` is initialised and stepped
at that site's scale (:mod:`.write`): ``mean + init * std * N(0, 1)`` with the per-coordinate
mean and std of the real (non-special) tokens' embeddings at the site, and the Adam learning
rate is ``lr`` times their RMS coordinate, so ``lr`` is scale-free.

Budget (:func:`.tune.tune`): the learning rate (per ``K``), and ``K`` and the step count of the
one tuned configuration, are chosen on the training split only: a prefix written from the
statements of the first ``tune_symbols`` training symbols, read back by those bindings' own
training read questions, scored by the first greedy token. ``len(sizes) x len(lrs)``
optimisation runs, each snapshotted at every count in ``steps``: ``len(sizes) x len(lrs) x
len(steps)`` configurations. No evaluation prompt chooses anything.

The modules: :mod:`.config` (the settings), :mod:`.prepend` (placeholders and the hook),
:mod:`.write` (the Adam steps), :mod:`.read` (decoding with the prefix), :mod:`.tune` (the
training-split choice) and :mod:`.rows` (the comparison rows).
"""
