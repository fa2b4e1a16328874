"""Keys: residual-stream states at chosen sites, standardized, and how a query is scored.

The query rule is the same for every prompt (write, read, plain, unrelated): the query is every
content token of the prompt (special tokens and padding excluded), and an entry's score is the
late-interaction *MaxSim* of its key tokens against those query tokens:

    score(entry) = mean over the entry's key tokens k of max over query tokens q of cos(k, q)

A single-vector key (the invented word's last token) is the one-token case. Nothing in the rule
uses the answer, the prompt's kind, or where the symbol is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


@dataclass(frozen=True)
class Standardizer:
    """Per-dimension z-scoring with statistics from training activations.

    Uncentred residual cosines sit at 0.97-0.99 on Gemma-3 (outlier dimensions), so cosines
    and thresholds are only meaningful after centring and scaling.
    """

    mean: Float[Tensor, " d"]
    std: Float[Tensor, " d"]

    @classmethod
    def fit(cls, acts: Float[Tensor, "n d"]) -> Standardizer:
        return cls(acts.mean(0), acts.std(0).clamp_min(1e-6))

    def to(self, device: torch.device) -> Standardizer:
        """These statistics on ``device``, in float32."""
        return Standardizer(self.mean.to(device).float(), self.std.to(device).float())

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def pad_queries(
    queries: list[Float[Tensor, "len d"]],
) -> tuple[Float[Tensor, "q pos d"], Bool[Tensor, "q pos"]]:
    """Stack variable-length query token sets into a zero-padded batch with a mask."""
    width = max(q.shape[0] for q in queries)
    dim = queries[0].shape[1]
    device = queries[0].device
    out = torch.zeros(len(queries), width, dim, device=device)
    mask = torch.zeros(len(queries), width, dtype=torch.bool, device=device)
    for i, q in enumerate(queries):
        out[i, : q.shape[0]] = q
        mask[i, : q.shape[0]] = True
    return out, mask


def maxsim(
    queries: Float[Tensor, "q pos d"],
    query_mask: Bool[Tensor, "q pos"],
    key_tokens: Float[Tensor, "m d"],
    owner: Int[Tensor, " m"],
    n_entries: int,
    max_elements: int = 2**24,
    unit_keys: bool = False,
) -> Float[Tensor, "q n"]:
    """MaxSim scores of every query against every entry (vectorized; see ``maxsim_loop``).

    One matrix product of all query tokens against all key tokens, on the keys' device, taken in
    query chunks of at most ``max_elements`` similarities so that large banks fit in memory.
    Single-vector keys (``owner`` is ``0..n-1``) skip the per-entry mean; ``unit_keys`` says the
    keys are already unit-norm (a memory's cached index).
    """
    device = key_tokens.device
    kn = key_tokens if unit_keys else torch.nn.functional.normalize(key_tokens, dim=-1)
    owner = owner.to(device)
    single = owner.shape[0] == n_entries and bool(
        (owner == torch.arange(n_entries, device=device)).all()
    )
    if not single:
        ones = torch.ones_like(owner, dtype=kn.dtype)
        count = torch.zeros(n_entries, device=device, dtype=kn.dtype).index_add_(0, owner, ones)
    chunk = max(1, max_elements // max(1, queries.shape[1] * key_tokens.shape[0]))
    out = []
    for start in range(0, queries.shape[0], chunk):
        mask = query_mask[start : start + chunk].to(device)
        q = torch.nn.functional.normalize(queries[start : start + chunk].to(device), dim=-1)
        # Padding repeats the row's first real token: a max is unchanged by a repeated element,
        # and the similarity tensor needs no mask.
        first = q[torch.arange(q.shape[0], device=device), mask.int().argmax(dim=1)]
        q = torch.where(mask[:, :, None], q, first[:, None, :])
        best = torch.einsum("qpd,md->qpm", q, kn).max(dim=1).values  # [q, m]
        best = best.masked_fill(~mask.any(dim=1, keepdim=True), float("-inf"))
        if single:
            out.append(best)
            continue
        total = torch.zeros(best.shape[0], n_entries, device=device, dtype=best.dtype)
        out.append(total.index_add_(1, owner, best) / count.clamp_min(1.0))
    return torch.cat(out)


def maxsim_loop(
    queries: list[Float[Tensor, "len d"]],
    key_tokens: Float[Tensor, "m d"],
    owner: Int[Tensor, " m"],
    n_entries: int,
) -> Float[Tensor, "q n"]:
    """The naive reference for ``maxsim``: one query, one entry, one key token at a time."""
    out = torch.zeros(len(queries), n_entries)
    for qi, q in enumerate(queries):
        for e in range(n_entries):
            toks = [key_tokens[m] for m in range(len(owner)) if int(owner[m]) == e]
            best = []
            for k in toks:
                cos = [float(torch.nn.functional.cosine_similarity(k, t, dim=0)) for t in q]
                best.append(max(cos))
            out[qi, e] = sum(best) / len(best)
    return out
