"""The public memory API: fit, write (spans, replace), delete, generate, apply, save/load."""

from __future__ import annotations

import pytest
import torch

import fmi
from fmi.core.generate import decode
from fmi.errors import ConfigError, EntryNotFoundError, MemoryMismatchError
from fmi.memory.statements import key_spans, span_positions
from fmi.memory.values import unembedding

PROMPTS = [
    "Alice's favourite drink is",
    "Question: what is Alice's favourite drink? Answer:",
    "Bob lives in",
    "The capital of France is",
]


@pytest.fixture(scope="module")
def fitted(tiny_gemma):
    return fmi.FastMemory.fit(tiny_gemma, fmi.RecallConfig.quick())


@pytest.fixture
def memory(fitted):
    """A fresh copy of the fitted empty memory (writes mutate it)."""
    return fitted.select([])


def _logits(model, memory, texts):
    """Per prompt, the logits of one forward under ``memory.apply`` (None: no memory)."""
    out = []
    for text in texts:
        tokens = model.tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            if memory is None:
                out.append(model.bridge(tokens))
            else:
                with memory.apply(model):
                    out.append(model.bridge(tokens))
    return out


def _hooks(bridge) -> int:
    return sum(len(hp._forward_hooks) for hp in bridge.hook_dict.values())


def test_key_spans_known_answers():
    s = "Alice's favourite drink is"
    ks = key_spans(s, {"symbol": "Alice"})
    assert ks.symbol == ((0, 5),) and ks.context == ((5, len(s)),)
    assert (ks.symbol_text, ks.context_text) == ("Alice", "'s favourite drink is")
    ks = key_spans("In game A, the dax is", {"symbol": "dax", "context": "game A"})
    assert ks.symbol == ((15, 18),) and ks.context == ((3, 9),)
    ks = key_spans("In game A, the dax is", {"context": "game A"})
    assert ks.symbol == ((0, 3), (9, 21)) and ks.symbol_text == "In , the dax is"
    whole = key_spans(" Paris is nice ", None)
    assert whole.symbol == whole.context == ((0, 15),) and whole.symbol_text == "Paris is nice"
    assert key_spans("Alice", {"symbol": "Alice"}).context == ((0, 5),)  # nothing else to key


@pytest.mark.parametrize(
    "statement, spans, needle",
    [
        ("Bob lives in", {"symbol": "Carl"}, "'Carl' is not in the statement"),
        ("Bob lives in", {"subject": "Bob"}, "unknown key span 'subject'"),
        ("Bob lives in", {"symbol": " "}, "must be non-empty text"),
        ("  ", None, "a statement must be non-empty"),
    ],
)
def test_key_spans_refuse_bad_input(statement, spans, needle):
    with pytest.raises(ConfigError, match=needle):
        key_spans(statement, spans)


def test_span_positions_hand_made():
    offsets = [(0, 0), (0, 5), (5, 7), (8, 17), (18, 23)]  # <bos> Alice 's favourite drink
    assert span_positions(offsets, ((0, 5),)) == [1]
    assert span_positions(offsets, ((5, 23),)) == [2, 3, 4]
    assert span_positions(offsets, ((6, 9), (20, 21))) == [2, 3, 4]
    assert span_positions(offsets, ((40, 50),)) == []


def test_write_stores_keys_and_values_of_its_statement(tiny_gemma, memory):
    stored = memory.write("Alice's favourite drink is", " green tea", spans={"symbol": "Alice"})
    e = stored.entry
    tok = tiny_gemma.tokenizer
    full = tok("Alice's favourite drink is green tea\n")["input_ids"]
    statement = tok("Alice's favourite drink is")["input_ids"]
    assert list(e.answer) == full[len(statement) :] and e.ends
    assert e.answer_tokens == tuple(full[len(statement) : -1])
    assert memory.sequence(0).shape == (len(e.answer), tiny_gemma.bridge.cfg.d_model)
    # keys: token-site states of "Alice" (symbol) and of the rest (context), naive forward
    _, cache = tiny_gemma.bridge.run_with_cache(torch.tensor([full]))
    acts = cache[memory.encoder.token_site][0]
    offsets = tok("Alice's favourite drink is green tea\n", return_offsets_mapping=True)
    spans = [(i, a, b) for i, (a, b) in enumerate(offsets["offset_mapping"]) if b > a]
    symbol_pos = [i for i, a, b in spans if a < len("Alice")]
    context_pos = [i for i, a, b in spans if a >= len("Alice") and b <= len(PROMPTS[0])]
    assert symbol_pos and context_pos
    want = torch.cat([acts[symbol_pos], acts[context_pos]])
    assert torch.allclose(memory.token_keys, want, atol=1e-5)
    assert memory.token_role.tolist() == [0] * len(symbol_pos) + [1] * len(context_pos)
    # values: the refined correction from the full logits, one per answer token and the end
    w_u, b_u = unembedding(tiny_gemma.bridge)
    h = cache["ln_final.hook_out"][0][len(statement) - 1 : len(full) - 1]
    delta = torch.zeros_like(h)
    targets = torch.tensor(e.answer)
    for _ in range(memory.refine_steps):
        logits = (h + delta) @ w_u + b_u
        delta = delta + memory.alpha * (w_u[:, targets].T - torch.softmax(logits, -1) @ w_u.T)
    assert torch.allclose(memory.alpha * memory.sequence(0), delta, atol=1e-3, rtol=1e-4)


def test_same_spans_replace_latest_wins(memory):
    a = memory.write("Alice's favourite drink is", " green tea", spans={"symbol": "Alice"})
    b = memory.write("Bob lives in", " Paris", spans={"symbol": "Bob"})
    c = memory.write("Alice's favourite drink is", " coffee", spans={"symbol": "Alice"})
    assert (a.entry.id, b.entry.id, c.entry.id) == (0, 1, 2)
    assert a.replaced is None and b.replaced is None and c.replaced == a.entry
    assert [e.id for e in memory.entries] == [1, 2] and memory.entries[1].label == " coffee"
    d = memory.write("Alice's home town is", " Leeds", spans={"symbol": "Alice"})
    assert d.replaced is None and len(memory) == 3  # same symbol, another context: kept
    e = memory.write("In game A, Alice is", " red", spans={"symbol": "Alice", "context": "game A"})
    f = memory.write("In game A, Alice is", " blue", spans={"symbol": "Alice", "context": "game A"})
    assert e.replaced is None and f.replaced == e.entry and len(memory) == 4


BATCH = [
    ("Alice's favourite drink is", " green tea", {"symbol": "Alice"}),
    ("Bob lives in", " Paris", {"symbol": "Bob"}),
    ("In game A, the dax is", " red", {"symbol": "dax", "context": "game A"}),
    ("Alice's favourite drink is", " coffee", {"symbol": "Alice"}),
    ("Carol works at", " the town hall", None),
]


def test_write_many_equals_writing_in_turn(tiny_gemma, memory):
    """The batched write (several facts a forward, one W_U read per chunk) stores what writing
    each fact in turn stores: the same entries, replacements, ids and tensors."""
    loop = memory.select([])
    one_by_one = [loop.write(s, a, spans=sp, model=tiny_gemma) for s, a, sp in BATCH]
    batched = memory.select([])
    got = batched.write_many(
        [s for s, _, _ in BATCH],
        [a for _, a, _ in BATCH],
        spans=[sp for *_, sp in BATCH],
        model=tiny_gemma,
        batch_size=2,
    )
    assert got == one_by_one
    assert [e.id for e in batched.entries] == [1, 2, 3, 4] and batched.next_id == loop.next_id
    assert batched.entries == loop.entries
    for name in ("values", "symbol_keys", "token_keys", "tail_values"):
        torch.testing.assert_close(getattr(batched, name), getattr(loop, name), atol=1e-5, rtol=0)
    for name in ("token_owner", "token_role", "tail_owner"):
        assert torch.equal(getattr(batched, name), getattr(loop, name)), name


def test_write_many_chunks_agree_and_refuse_mismatched_lists(tiny_gemma, memory, monkeypatch):
    import fmi.memory.statements as statements

    whole = memory.select([])
    whole.write_many([s for s, _, _ in BATCH], [a for _, a, _ in BATCH], model=tiny_gemma)
    monkeypatch.setattr(statements, "WRITE_CHUNK", 2)
    chunked = memory.select([])
    chunked.write_many([s for s, _, _ in BATCH], [a for _, a, _ in BATCH], model=tiny_gemma)
    assert chunked.entries == whole.entries
    torch.testing.assert_close(chunked.values, whole.values, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="2 statements, 1 answers"):
        memory.write_many(["a is", "b is"], [" x"], model=tiny_gemma)


def test_delete_restores_the_memory_free_output_bit_for_bit(tiny_gemma, memory):
    bare = _logits(tiny_gemma, None, PROMPTS)
    memory.write("Alice's favourite drink is", " green tea", spans={"symbol": "Alice"})
    with_a = _logits(tiny_gemma, memory, PROMPTS)
    assert not torch.equal(with_a[0], bare[0])  # the fact fires on its own statement
    before = memory.generate(tiny_gemma, PROMPTS, max_new_tokens=6, until=None)
    b = memory.write("Bob lives in", " New York", spans={"symbol": "Bob"})
    memory.delete(b.entry.id)
    assert all(
        torch.equal(x, y) for x, y in zip(_logits(tiny_gemma, memory, PROMPTS), with_a, strict=True)
    )
    assert memory.generate(tiny_gemma, PROMPTS, max_new_tokens=6, until=None) == before
    memory.delete(0)
    assert len(memory) == 0
    assert all(
        torch.equal(x, y) for x, y in zip(_logits(tiny_gemma, memory, PROMPTS), bare, strict=True)
    )
    free = decode(tiny_gemma, PROMPTS, lambda enc, start: [], max_new_tokens=6)
    texts = [tiny_gemma.tokenizer.decode(list(t), skip_special_tokens=True) for t in free.tokens]
    assert memory.generate(tiny_gemma, PROMPTS, max_new_tokens=6, until=None) == texts
    with pytest.raises(EntryNotFoundError, match="no entry with id 0"):
        memory.delete(0)


def test_generate_reads_the_whole_answer_and_stops_at_the_end(tiny_gemma, memory):
    memory.write("Alice's favourite drink is", " green tea", spans={"symbol": "Alice"})
    memory.alpha *= 20  # a random model needs a strong push to follow; the mechanics are tested
    full = memory.generate(tiny_gemma, PROMPTS[:1], max_new_tokens=6, until=None)[0]
    assert full.startswith(" green tea\n")
    assert memory.generate(tiny_gemma, PROMPTS[:1], max_new_tokens=6) == [" green tea"]


def test_apply_removes_its_hooks_also_after_an_exception(tiny_gemma, memory):
    memory.write("Bob lives in", " Paris", spans={"symbol": "Bob"})
    tokens = tiny_gemma.tokenizer("Bob lives in", return_tensors="pt")["input_ids"]
    assert _hooks(tiny_gemma.bridge) == 0
    with memory.apply(tiny_gemma) as log:
        assert _hooks(tiny_gemma.bridge) > 0
        tiny_gemma.bridge(tokens)
    assert _hooks(tiny_gemma.bridge) == 0 and log.entry.tolist() == [0]
    with pytest.raises(RuntimeError, match="boom"), memory.apply(tiny_gemma):
        raise RuntimeError("boom")
    assert _hooks(tiny_gemma.bridge) == 0


def test_apply_adds_the_value_at_the_last_position_only(tiny_gemma, memory):
    """Arithmetic: under apply, the unembedding input equals the clean one plus alpha * value
    at the last position of a prompt whose entry fires, and nothing else changes."""
    memory.write("Bob lives in", " Paris", spans={"symbol": "Bob"})
    tokens = tiny_gemma.tokenizer("Bob lives in", return_tensors="pt")["input_ids"]
    site = "ln_final.hook_out"
    seen = {}

    def spy(name):
        def hook(act, hook):
            seen[name] = act.detach().clone()
            return act

        return hook

    with torch.inference_mode():
        _, clean = tiny_gemma.bridge.run_with_cache(tokens, names_filter=[site])
        with (
            memory.apply(tiny_gemma),
            tiny_gemma.bridge.hooks(fwd_hooks=[("unembed.hook_in", spy("h"))]),
        ):
            tiny_gemma.bridge(tokens)
    want = clean[site].clone()
    want[0, -1] += memory.alpha * memory.values[0]
    assert torch.allclose(seen["h"], want, atol=1e-5)
    assert torch.equal(seen["h"][0, :-1], clean[site][0, :-1])


def test_save_load_round_trip_and_foreign_model(tiny_gemma, tiny_neox, memory, tmp_path):
    memory.write("Alice's favourite drink is", " green tea", spans={"symbol": "Alice"})
    memory.write("Bob lives in", " Paris")
    path = tmp_path / "m.fmi.safetensors"
    memory.save(path)
    back = fmi.FastMemory.load(path, tiny_gemma)
    assert back.entries == memory.entries and back.next_id == 2
    assert (back.end, back.refine_steps, back.mode) == (memory.end, memory.refine_steps, "dual_key")
    assert back.generate(tiny_gemma, PROMPTS, max_new_tokens=5) == memory.generate(
        tiny_gemma, PROMPTS, max_new_tokens=5
    )
    with pytest.raises(MemoryMismatchError, match="tiny-gemma"):
        fmi.FastMemory.load(path, tiny_neox)
    with pytest.raises(MemoryMismatchError):
        memory.write("x is", " y", model=tiny_neox)


def test_public_api_is_small_and_documented():
    assert set(fmi.__all__) >= {"FastMemory", "load_model", "RecallConfig"}
    assert sorted(fmi.__all__) == sorted(fmi._EXPORTS)
    for name in fmi.__all__:
        obj = getattr(fmi, name)
        assert obj.__doc__, name
    for method in ("fit", "write", "write_many", "delete", "generate", "apply", "save", "load"):
        assert ">>>" in getattr(fmi.FastMemory, method).__doc__, method
