"""Answers of any length: the values of one teacher-forced frozen forward over statement + answer.

For an answer tokenized ``a_1 .. a_T`` after a statement, the forward runs over
``statement + answer + end``. The value for answer token ``t`` is the output correction at the
position that predicts it, ``v_t = W_U[:, a_t] - W_U softmax(z_{t-1})`` at ``ln_final.hook_out``
(``z_0`` being the statement's last position), and the *end value* ``v_{T+1}`` is the same
correction for the first token of ``end`` at the answer's last position: the token that ends the
answer (a newline, or the read template's text after ``{label}``), so greedy reading stops after
the answer instead of running on. One forward pass, no backward pass, for any ``T``.

>>> from fmi.models.registry import load_model
>>> model = load_model("tiny-neox", announce=lambda _: None)
>>> got, _ = answer_values(model, ["Alice's favourite drink is"], [" green tea"], end="\\n")
>>> [len(t) for t in got.tokens]   # " green", " tea", then the end token "\\n"
[3]
>>> got.values[0].shape[0] == len(got.tokens[0])
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from fmi.core.forward import Collected, collect
from fmi.core.sites import UNEMBED_IN
from fmi.errors import ConfigError
from fmi.memory.values import streamed_values, unembedding


@dataclass(frozen=True)
class AnswerValues:
    """Per statement: the answer's token ids then the end token, and one value per token."""

    tokens: list[list[int]]  # a_1 .. a_T, then the end token (when there is one)
    predicting: list[list[int]]  # the unpadded position predicting each token
    values: list[Float[Tensor, "t d"]]  # row t corrects the prediction of tokens[i][t]
    states: list[Float[Tensor, "t d"]]  # h at UNEMBED_IN at each predicting position
    entropy: list[Float[Tensor, " t"]]  # the frozen model's next-token entropy there (nats)
    has_end: list[bool]


def answer_positions(
    tokenizer, statement: str, answer: str, end: str
) -> tuple[list[int], list[int], bool]:
    """``(ids, predicting, has_end)`` for ``statement + answer + end``: the answer's token ids,
    then the end token's when ``end`` adds one (``has_end``), and for each id the unpadded
    position whose next-token prediction it is.

    A token that runs across the statement/answer or the answer/end boundary would make the
    stored tokens differ from what reading produces: refused, naming the answer.
    """
    if not answer:
        raise ConfigError(f"the answer to {statement!r} is empty")
    enc = tokenizer(statement + answer + end, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    lo, hi = len(statement), len(statement) + len(answer)
    spans = [(i, a, b) for i, (a, b) in enumerate(offsets) if b > a]
    if any(a < cut < b for _, a, b in spans for cut in (lo, hi)):
        raise ConfigError(
            f"answer {answer!r} after {statement!r} does not sit on token boundaries "
            "(start it with a space, or end the statement before it)"
        )
    inside = [i for i, a, _ in spans if lo <= a < hi]
    after = [i for i, a, _ in spans if a >= hi][:1]
    if not inside or inside[0] == 0:
        raise ConfigError(f"answer {answer!r} needs a statement before it")
    tokens = inside + after
    if tokens != list(range(tokens[0], tokens[0] + len(tokens))):
        raise ConfigError(f"answer {answer!r} is not one contiguous run of tokens")
    return [ids[i] for i in tokens], [i - 1 for i in tokens], bool(after)


def answer_values(
    model,
    statements: list[str],
    answers: list[str],
    *,
    end: str = "\n",
    batch_size: int = 16,
    sites: tuple[str, ...] = (),
) -> tuple[AnswerValues, Collected]:
    """Values for every answer token and the end token, from one frozen forward per batch over
    ``statement + answer + end``, and that forward's activations at ``sites`` (unpadded; the
    statement's positions are those of the statement alone, since the answer sits on token
    boundaries).

    ``end`` is the text that follows the answer when it is read (``""``: no end value).
    """
    if len(statements) != len(answers):
        raise ConfigError(f"{len(statements)} statements but {len(answers)} answers")
    tok = model.tokenizer
    where = [answer_positions(tok, s, a, end) for s, a in zip(statements, answers, strict=True)]
    texts = [s + a + end for s, a in zip(statements, answers, strict=True)]
    wanted = list(dict.fromkeys([*sites, UNEMBED_IN]))
    got = collect(model.bridge, tok, texts, wanted, batch_size=batch_size)
    # collect() keeps each prompt's unpadded positions; special tokens the tokenizer adds in
    # front (Gemma-3's <bos>) are in both the offsets and the activations, so indices agree.
    states = [got.acts[UNEMBED_IN][i][pos] for i, (_, pos, _) in enumerate(where)]
    w_u, b_u = unembedding(model.bridge, linear_only=True)
    flat_t = torch.tensor([t for ids, _, _ in where for t in ids])
    flat_v, flat_e = streamed_values(torch.cat(states), w_u, b_u, flat_t)
    sizes = [len(ids) for ids, _, _ in where]
    values = AnswerValues(
        tokens=[ids for ids, _, _ in where],
        predicting=[pos for _, pos, _ in where],
        values=list(flat_v.split(sizes)),
        states=states,
        entropy=list(flat_e.split(sizes)),
        has_end=[flag for _, _, flag in where],
    )
    return values, got
