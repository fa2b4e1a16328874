"""The retention term: ``KL(p_base || p_adapted)`` of the next token on unrelated prompts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from analyses.capacity.lora.base import _last_logits
from fmi.errors import ConfigError


@dataclass(frozen=True)
class Retention:
    """Retention prompts in fixed batches, with the frozen model's next-token log-probabilities
    at each one's last position (computed once, without any adapter, no gradient)."""

    batches: tuple[tuple[str, ...], ...]
    base: tuple[Float[Tensor, "batch vocab"], ...]

    @classmethod
    def build(cls, model, texts: list[str], batch_size: int) -> Retention:
        """Chunk ``texts`` into batches of ``batch_size`` and record ``log p_base`` for each;
        call it with no adapter applied. Each training step reads one batch, in turn, encoded
        exactly as here, so an adapter with ``B = 0`` scores a KL of exactly 0."""
        if not texts:
            raise ConfigError("retention needs at least one prompt")
        batches = tuple(tuple(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size))
        with torch.no_grad():  # not inference_mode: the targets are saved for backward
            base = tuple(_last_logits(model, list(b)).log_softmax(-1) for b in batches)
        return cls(batches, base)

    @property
    def n_prompts(self) -> int:
        return sum(len(b) for b in self.batches)


def retention_kl(
    model, texts: list[str] | tuple[str, ...], base: Float[Tensor, "batch vocab"]
) -> Tensor:
    """``KL(p_base || p)`` of the next token at the last position, summed over the vocabulary
    and averaged over ``texts`` (``p``: the model as it runs now, adapter hooks included).

    Followed: ROME (kmeng01/rome ``rome/compute_v.py``) and MEMIT (kmeng01/memit
    ``memit/compute_z.py``) add ``kl_factor * F.kl_div(kl_distr_init, kl_log_probs,
    log_target=True, reduction="batchmean")`` to the edit's NLL, where ``kl_distr_init`` are the
    unedited model's log-probabilities at the last token of KL prompts, recorded once and
    detached (``kl_factor`` 0.0625 in MEMIT's GPT-J hparams). Same reduction (``batchmean``:
    summed over the vocabulary, averaged over prompts), same once-recorded, detached base. Two
    differences: the prompts are unrelated training questions (retention of unrelated
    behaviour, not ROME's subject "essence" prompts ``"{} is a"``), and the arguments are
    swapped to give ``KL(p_base || p_adapted)`` as specified here; ROME/MEMIT's call computes
    ``KL(p_edited || p_base)``. The two agree to second order near ``p = p_base``. EasyEdit's
    fine-tuning baseline (zjunlp/EasyEdit ``easyeditor/models/ft/ft_main.py``, FT-L / FT-M) has no
    KL term (only an optional weight-norm clamp), so there was nothing to follow there.
    """
    logp = _last_logits(model, list(texts)).log_softmax(-1)
    return torch.nn.functional.kl_div(
        logp, base.to(logp.device), log_target=True, reduction="batchmean"
    )
