"""Keys and retrieval scoring: the vectorized MaxSim against a naive loop; the query rule."""

from __future__ import annotations

import torch

from fmi.core.prompts import field_spans, span_tokens
from fmi.memory.keys import Standardizer, maxsim, maxsim_loop, pad_queries


def test_maxsim_matches_naive_loop():
    gen = torch.Generator().manual_seed(0)
    queries = [torch.randn(n, 6, generator=gen) for n in (3, 5, 1, 4)]
    keys = torch.randn(7, 6, generator=gen)
    owner = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    padded, mask = pad_queries(queries)
    fast = maxsim(padded, mask, keys, owner, 4)
    torch.testing.assert_close(fast, maxsim_loop(queries, keys, owner, 4), rtol=1e-5, atol=1e-6)


def test_maxsim_ignores_padding_and_finds_the_planted_key():
    keys = torch.eye(4)
    query = [torch.tensor([[0.0, 0.0, 1.0, 0.1]])]
    padded, mask = pad_queries(query + [torch.zeros(3, 4)])
    scores = maxsim(padded, mask, keys, torch.arange(4), 4)
    assert int(scores[0].argmax()) == 2


def test_standardizer_centres_and_scales():
    x = torch.randn(200, 3, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1]).double()
    x = x + torch.tensor([5.0, -2.0, 100.0]).double()
    z = Standardizer.fit(x)(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3).double(), atol=1e-9, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(3).double(), atol=1e-9, rtol=0)


def test_field_spans_locate_symbol_and_context(tiny_pythia):
    text, spans = field_spans(
        "In {context}, {symbol} means", {"context": "game A", "symbol": "blicket"}
    )
    assert text == "In game A, blicket means"
    assert text[slice(*spans["symbol"])] == "blicket"
    tok = tiny_pythia.tokenizer
    idx = span_tokens(tok, text, spans["symbol"])
    ids = tok(text)["input_ids"]
    assert tok.decode([ids[i] for i in idx]).strip() == "blicket"
    ctx = span_tokens(tok, text, spans["context"])
    assert tok.decode([ids[i] for i in ctx]).strip() == "game A"


def test_prompt_spans_match_templates_for_every_kind():
    from fmi.core.prompts import prompt_spans
    from fmi.experiments.tasks import Binding, Templates

    t = Templates()
    b = Binding("game C", "blicket", "red", read_context="the C game")
    for kind in ("write", "read", "plain"):
        text, spans = prompt_spans(t, kind, b)
        assert text == t.prompt(kind, b)
        assert text[slice(*spans["symbol"])] == "blicket"
    read, spans = prompt_spans(t, "read", b)
    assert read[slice(*spans["context"])] == "the C game"
    assert "context" not in prompt_spans(t, "plain", b)[1]


def test_retrieved_right_exact_and_by_symbol():
    from types import SimpleNamespace

    from fmi.memory.retrieve import retrieved_right

    memory = SimpleNamespace(symbols=lambda: ["dax", "dax", "wug"])
    chosen = torch.tensor([0, 1, -1, 2, 0])
    target = [0, 0, 0, 2, -1]
    exact = retrieved_right("dual_key", chosen, target, memory)  # type: ignore[arg-type]
    same_symbol = retrieved_right("average", chosen, target, memory)  # type: ignore[arg-type]
    assert exact.tolist() == [True, False, False, True, False]
    assert same_symbol.tolist() == [True, True, False, True, False]


def test_average_injects_the_mean_of_the_symbols_values():
    from types import SimpleNamespace

    from fmi.memory.retrieve import QueryScores, decide

    values = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    memory = SimpleNamespace(
        symbols=lambda: ["dax", "dax", "wug"], values=values, alpha=2.0, thresholds={"average": 0.5}
    )
    projected = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [0.1, 0.2, 0.3]])
    scores = QueryScores(raw=projected, projected=projected, symbol=projected, context=projected)
    d = decide("average", scores, memory)  # type: ignore[arg-type]
    assert d.entry.tolist() == [0, 2, -1]
    torch.testing.assert_close(d.vectors, torch.tensor([[4.0, 2.0], [10.0, 10.0], [0.0, 0.0]]))
