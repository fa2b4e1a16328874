"""Reading with a soft prefix: greedy decoding with the prefix prepended to every query."""

from __future__ import annotations

from types import SimpleNamespace

from jaxtyping import Float, Int
from torch import Tensor

from analyses.compare.soft_prefix.prepend import SITE, PrefixTokenizer, prefix_hook, prefix_starts
from fmi.core.generate import Generated, decode
from fmi.core.hooks import HookFn
from fmi.core.prompts import Encoded
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import Outputs, SplitRun


def prefix_greedy(
    model,
    texts: list[str],
    prefix: Float[Tensor, "k d"],
    *,
    label_ids: Int[Tensor, " n"] | None = None,
    max_new_tokens: int = 3,
    batch_size: int = 16,
) -> Generated:
    """Greedy-decode ``texts`` with ``prefix`` prepended to each (:func:`fmi.core.generate.decode`
    over :class:`PrefixTokenizer` batches, with :func:`prefix_hook` at ``hook_embed``)."""
    ptok = PrefixTokenizer(model.tokenizer, int(prefix.shape[0]))
    view = SimpleNamespace(bridge=model.bridge, tokenizer=ptok)

    def hooks_for(enc: Encoded, start: int) -> list[tuple[str, HookFn]]:
        chunk = texts[start : start + enc.tokens.shape[0]]
        return [(SITE, prefix_hook(prefix, prefix_starts(ptok, chunk, enc)))]

    return decode(
        view,
        texts,
        hooks_for,
        label_ids=label_ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )


def read_outputs(model, run: SplitRun, cfg: RecallConfig, prefix: Tensor) -> Outputs:
    """Every query of ``run`` decoded with ``prefix`` prepended (always on, no retrieval)."""
    gen = prefix_greedy(
        model,
        run.qs.texts,
        prefix,
        label_ids=run.label_ids,
        max_new_tokens=run.max_new_tokens,
        batch_size=cfg.batch_size,
    )
    return Outputs(gen.tokens, gen.label_pick)
