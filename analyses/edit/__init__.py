"""Knowledge editing: the benchmark's cases, loaders, metrics, methods and runner (``fmi edit``).

A case asks one edit (``subject``'s ``prompt`` is now completed by ``target_new``, not
``target_true``) and carries the probes it is judged on: paraphrases of the rewrite prompt, and
neighbourhood prompts about other subjects that the edit must leave alone.
"""
