"""Multi-token answers: each token's value, and the end value, against the naive computation."""

from __future__ import annotations

import pytest
import torch

from fmi.errors import ConfigError
from fmi.experiments.metrics import answer_match, answer_prefix, answer_word
from fmi.memory.answers import answer_positions, answer_values
from fmi.memory.values import correction_values, unembedding

STATEMENTS = ["Alice's favourite drink is", "In game A, blicket means", "The capital of it is"]
ANSWERS = [" green tea", " red", " New York City"]


@pytest.mark.parametrize("name", ["tiny_neox", "tiny_gemma"])
def test_each_value_equals_the_naive_correction_from_the_full_logits(name, request):
    model = request.getfixturevalue(name)
    got, _ = answer_values(model, STATEMENTS, ANSWERS, end="\n", batch_size=2)
    w_u, _ = unembedding(model.bridge)
    tok = model.tokenizer
    for i, (s, a) in enumerate(zip(STATEMENTS, ANSWERS, strict=True)):
        ids = tok(s + a + "\n")["input_ids"]
        answer_ids = tok(s + a)["input_ids"][len(tok(s)["input_ids"]) :]
        assert got.tokens[i][:-1] == answer_ids  # the answer's own tokens, in order
        assert got.tokens[i][-1] == ids[len(tok(s + a)["input_ids"])]  # then the end token
        assert got.has_end[i]
        with torch.no_grad():
            logits = model.bridge(torch.tensor([ids])).float()[0]
        # one prompt at a time, every position: the naive loop over answer tokens
        for t, target in enumerate(got.tokens[i]):
            pos = len(ids) - len(got.tokens[i]) - 1 + t
            naive = correction_values(w_u, logits[pos : pos + 1], torch.tensor([target]))[0]
            assert torch.allclose(got.values[i][t], naive, atol=1e-4, rtol=1e-4), (i, t)


def test_no_end_text_gives_no_end_value(tiny_neox):
    got, _ = answer_values(tiny_neox, STATEMENTS[:1], ANSWERS[:1], end="")
    assert got.has_end == [False]
    assert len(got.tokens[0]) == len(got.values[0]) == 2  # " green", " tea"


def test_positions_of_a_known_tokenization(tiny_neox):
    tok = tiny_neox.tokenizer
    ids, pred, has_end = answer_positions(tok, "Hello, I", " am", "\n")
    full = tok("Hello, I am\n")["input_ids"]
    n = len(tok("Hello, I")["input_ids"])
    assert ids == full[n:] and pred == list(range(n - 1, len(full) - 1)) and has_end


@pytest.mark.parametrize(
    ("statement", "answer", "match"),
    [
        ("drink is", "", "empty"),
        ("", " tea", "needs a statement"),
        ("drink is gr", "een tea", "token boundaries"),
    ],
)
def test_bad_answers_are_refused_by_name(tiny_neox, statement, answer, match):
    with pytest.raises(ConfigError, match=match):
        answer_positions(tiny_neox.tokenizer, statement, answer, "\n")


def test_lengths_must_agree(tiny_neox):
    with pytest.raises(ConfigError, match="2 statements but 1 answers"):
        answer_values(tiny_neox, STATEMENTS[:2], ANSWERS[:1])


@pytest.mark.parametrize(
    ("text", "answer", "expected"),
    [
        (" New York.", " New York", True),
        (" New York", " New York", True),
        ("\n\nNew York City", " New York", True),
        (" New Yorker", " New York", False),
        (" New", " New York", False),
        (" pig" + "let", " pig", False),
        ("\n\nred", " red", True),
        (" red-hot", " red", True),
        (" Red", " red", False),
        ("", " red", False),
    ],
)
def test_answer_match_known_answers(tiny_neox, text, answer, expected):
    tok = tiny_neox.tokenizer
    ids = tuple(tok(text)["input_ids"]) if text else ()
    assert answer_match(tok, ids, answer) is expected


def test_answer_match_agrees_with_answer_word_on_one_word_labels(tiny_neox):
    tok = tiny_neox.tokenizer
    for text in (" red", " redish", "\nred,", " red_", " blue red", " piglet", " pig."):
        ids = tuple(tok(text)["input_ids"])
        for label in ("red", "pig"):
            assert answer_match(tok, ids, " " + label) is (answer_word(tok, ids) == label), text


@pytest.mark.parametrize(
    ("got", "want", "expected"),
    [
        ((5, 6, 7), (5, 6, 7), 1.0),
        ((5, 6, 9), (5, 6, 7, 8), 0.5),
        ((9, 6, 7), (5, 6, 7), 0.0),
        ((5,), (5, 6, 7, 8), 0.25),
        ((), (5,), 0.0),
    ],
)
def test_answer_prefix_known_answers(got, want, expected):
    assert answer_prefix(got, want) == expected


def test_answer_prefix_needs_an_answer():
    with pytest.raises(ValueError, match="at least one"):
        answer_prefix((1,), ())


@pytest.mark.parametrize("name", ["tiny_neox", "tiny_gemma"])
def test_write_with_an_end_keeps_keys_and_first_values_and_adds_tails(name, request):
    from fmi.experiments.builtin_tasks import builtin_task
    from fmi.experiments.tasks import Binding
    from fmi.memory.write import write

    model = request.getfixturevalue(name)
    split = builtin_task(seed=0, n_train=4, n_eval=2).train
    bindings = [*split.bindings[:3], Binding("game A", "dax", "New York City")]
    n_layers = int(model.bridge.cfg.n_layers)
    kw = dict(
        symbol_site=f"blocks.{n_layers - 1}.hook_resid_post",
        token_site="blocks.0.hook_resid_post",
        inject_site="ln_final.hook_out",
        batch_size=2,
    )
    old = write(model, bindings, split.templates, **kw)
    new = write(model, bindings, split.templates, end="\n", **kw)
    close = dict(atol=1e-4, rtol=1e-4)
    for field in ("values", "symbol_keys", "token_keys", "answer_states", "answer_entropy"):
        assert torch.allclose(getattr(old, field), getattr(new, field), **close), field
    assert torch.equal(old.token_owner, new.token_owner) and old.tail_values is None
    tok = model.tokenizer
    for i, (b, e) in enumerate(zip(bindings, new.entries, strict=True)):
        answer = tok(split.templates.target("write", b.label), add_special_tokens=False)
        assert e.tokens[:-1] == tuple(answer["input_ids"]) and e.target == e.tokens[0]
        assert int((new.tail_owner == i).sum()) == len(e.tokens) - 1
    # the tail of the multi-token entry equals answer_values on its statement alone
    statement = split.templates.prompt("write", bindings[3])
    alone, _ = answer_values(model, [statement], [" New York City"], end="\n")
    assert torch.allclose(new.tail_values[new.tail_owner == 3], alone.values[0][1:], **close)
