"""Teacher-forced log-probabilities of whole targets under a held edit, in batched forwards.

:func:`target_logprobs` gives, for each ``(prompt, target)``, the log-probability of every token
of ``answer_text(target)`` as it follows ``held.prompts([prompt])``, with the method's hooks on.
It runs the decoding path itself (:func:`fmi.core.generate.decode`): one left-padded batch of
the rewritten prompts, ``held.hooks_for(enc, start)`` (``enc`` the batch of prompts, ``start``
its first row's index in the list) inside ``bridge.hooks``, and ``bridge.generate`` with the KV
cache. Step 0 is the prompt pass; step ``s`` sees one new position. A forcing hook at the
logits (:data:`fmi.core.hooks.LOGITS_SITE`), registered before the method's, keeps each step's
log-softmax and makes the target's token the greedy pick, so the next step is fed the target.
A memory's hooks therefore fire exactly as when decoding: the prompt pass decides, and each
later step follows "greedy" while it stays on the stored answer, the pick it sees being the
forced token (the probability of a sequence is the product of its tokens' probabilities
given the tokens before it, the method's state included).

ROME's CounterFact scores compare the *mean* negative log-probability per target token
(``test_batch_prediction`` in ``experiments/py/eval_utils_counterfact.py`` of kmeng01/rome
divides the summed NLL by the target's token count), :func:`mean_logprob` here.

>>> from analyses.edit.method import Held, no_hooks
>>> from fmi.models.registry import load_model
>>> model = load_model("tiny-neox", announce=lambda _: None)
>>> got = target_logprobs(model, Held(), ["Alice's favourite drink is"], ["green tea"])
>>> len(got[0]) == len(model.tokenizer(" green tea")["input_ids"]), all(x < 0 for x in got[0])
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from analyses.edit.cases import answer_text
from analyses.edit.method import Held, no_hooks
from fmi.core.forward import answer_only
from fmi.core.hooks import LOGITS_SITE
from fmi.core.prompts import encode
from fmi.memory.answers import answer_positions


def target_ids(tokenizer, prompt: str, target: str) -> list[int]:
    """The token ids of ``answer_text(target)`` as it follows ``prompt`` (as in
    :func:`analyses.edit.teacher.forced`).

    >>> from fmi.models.tiny import neox_tokenizer
    >>> tok = neox_tokenizer()
    >>> target_ids(tok, "Rome is in", "Italy") == tok(" Italy")["input_ids"]
    True
    """
    return answer_positions(tokenizer, prompt, answer_text(target), "")[0]


def _forcing(targets: list[list[int]], kept: list[list[float]]):
    """The logits hook: at step ``s`` keep row ``b``'s log-probability of ``targets[b][s]`` and
    make that token the only maximum of the last position (rows past their target: token 0)."""
    state = {"step": 0}

    def hook(act: torch.Tensor, hook: object) -> torch.Tensor:
        step = state["step"]
        state["step"] = step + 1
        last = act[:, -1].float().log_softmax(-1)
        picks = []
        for b, ids in enumerate(targets):
            if step < len(ids):
                kept[b].append(float(last[b, ids[step]]))
                picks.append(ids[step])
            else:
                picks.append(0)
        out = act.clone()
        out[:, -1] = 0
        out[torch.arange(act.shape[0]), -1, torch.tensor(picks, device=act.device)] = 1
        return out

    return hook


@torch.inference_mode()
def target_logprobs(
    model,
    held: Held,
    prompts: Sequence[str],
    targets: Sequence[str],
    *,
    batch_size: int = 16,
) -> list[list[float]]:
    """Per ``(prompts[i], targets[i])``: the log-probability of each token of
    ``answer_text(targets[i])`` teacher-forced after ``held.prompts(prompts)[i]`` under
    ``held.hooks_for`` (see the module), in left-padded batches of ``batch_size``. A held
    ``prefix`` without hooks (in-context's stated facts) is run once and its keys and values
    reused (:func:`analyses.edit.prefix_cache.answer_logprobs`: the same values up to float
    rounding)."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    prefix = getattr(held, "prefix", "")
    if prefix and held.hooks_for is no_hooks:  # in-context: the stated facts run once
        from analyses.edit.prefix_cache import answer_logprobs

        answers = [answer_text(t) for t in targets]
        return answer_logprobs(model, list(prompts), answers, prefix=prefix, batch_size=batch_size)
    texts = held.prompts(list(prompts))
    ids = [target_ids(model.tokenizer, t, a) for t, a in zip(texts, targets, strict=True)]
    out: list[list[float]] = []
    bridge = model.bridge
    for start in range(0, len(texts), batch_size):
        enc = encode(model.tokenizer, texts[start : start + batch_size])
        rows = ids[start : start + batch_size]
        kept: list[list[float]] = [[] for _ in rows]
        forcing = [(LOGITS_SITE, _forcing(rows, kept))]
        with bridge.hooks(fwd_hooks=forcing + list(held.hooks_for(enc, start))):
            bridge.generate(
                enc.tokens,
                attention_mask=enc.mask,
                max_new_tokens=max(len(r) for r in rows),
                do_sample=False,
                stop_at_eos=False,
                verbose=False,
                logits_to_keep=answer_only(enc.tokens),
            )
        out.extend(kept)
    return out


def mean_logprob(logprobs: Sequence[float]) -> float:
    """The mean log-probability per token: ROME's ``-NLL / len(target)`` (its probability
    comparisons use this, not the whole-sequence sum).

    >>> mean_logprob([math.log(0.5), math.log(0.125)]) == math.log(0.25)
    True
    """
    if not logprobs:
        raise ValueError("mean_logprob needs at least one token")
    return math.fsum(logprobs) / len(logprobs)
