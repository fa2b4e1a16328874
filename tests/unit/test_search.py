"""The int8-prefiltered search is exact: its top-1 equals brute-force MaxSim's, its prefilter stays
within its bound, and reading through it decides as reading without it."""

from __future__ import annotations

import pytest
import torch

from fmi.memory.codes import Channel, Quantized, approx_maxsim
from fmi.memory.keys import maxsim, pad_queries
from fmi.memory.search import search_top1


def _unit(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=gen), dim=-1)


def _bank(n: int, per: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per`` unit key rows per entry, rows of an entry not adjacent (owner unsorted)."""
    gen = torch.Generator().manual_seed(seed)
    owner = torch.arange(n).repeat(per)
    return _unit(n * per, dim, gen=gen), owner


def _queries(rows: torch.Tensor, owner: torch.Tensor, n_q: int, seed: int) -> list[torch.Tensor]:
    """Queries of 3 to 9 random tokens; every other one holds noisy copies of an entry's rows,
    as a read prompt holds its binding's tokens."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n_q):
        q = torch.randn(
            int(torch.randint(3, 10, (1,), generator=gen)), rows.shape[1], generator=gen
        )
        if i % 2 == 0:
            mine = rows[owner == (7 * i) % int(owner.max() + 1)]
            q[: len(mine)] = 4 * mine + 0.5 * torch.randn(mine.shape, generator=gen)
        out.append(q)
    return out


def _brute(rows, owner, n, queries):
    qs, mask = pad_queries(queries)
    return maxsim(qs, mask, rows, owner, n)


def test_int8_codes_decode_within_their_recorded_error():
    gen = torch.Generator().manual_seed(0)
    rows = _unit(50, 32, gen=gen)
    q = Quantized.of(rows)
    assert q.codes.dtype == torch.int8 and int(q.codes.abs().max()) == 127
    decoded = q.codes.float() / q.scale[:, None]
    torch.testing.assert_close((rows - decoded).norm(dim=-1), q.error)
    assert float(q.error.max()) <= 0.5 * 32**0.5 / float(q.scale.min()) + 1e-6


@pytest.mark.parametrize("per", [1, 3])
def test_prefilter_stays_within_its_bound(per):
    rows, owner = _bank(300, per, 48, seed=1)
    queries = _queries(rows, owner, 12, seed=2)
    qs, mask = pad_queries([torch.nn.functional.normalize(q, dim=-1) for q in queries])
    approx, bound = approx_maxsim(qs, mask, Channel.of(rows, owner, 300))
    exact = _brute(rows, owner, 300, queries)
    assert bool(((approx - exact).abs() <= bound[:, None]).all())
    assert float((approx - exact).abs().max()) > 0  # the codes are not exact: the bound matters


@pytest.mark.parametrize("per", [1, 3])
def test_one_channel_search_equals_brute_force(per):
    rows, owner = _bank(2000, per, 64, seed=3)
    queries = _queries(rows, owner, 20, seed=4)
    best, entry, rescored = search_top1([Channel.of(rows, owner, 2000)], [queries], 2000)
    ref_best, ref_entry = _brute(rows, owner, 2000, queries).max(dim=1)
    assert torch.equal(entry, ref_entry)
    torch.testing.assert_close(best, ref_best, rtol=1e-5, atol=1e-6)
    assert int(rescored[::2].max()) < 2000 // 16  # planted queries took the pruned path


def test_dual_key_search_equals_brute_force():
    n = 1500
    sym_rows, sym_owner = _bank(n, 2, 64, seed=5)
    contexts, _ = _bank(2, 1, 64, seed=6)  # two contexts shared by every entry, as in a bank
    ctx_owner = torch.arange(n)
    ctx_rows = contexts[ctx_owner % 2]
    sym_q = _queries(sym_rows, sym_owner, 16, seed=7)
    ctx_q = [torch.cat([q[:2], 3 * contexts[(7 * i) % n % 2][None]]) for i, q in enumerate(sym_q)]
    channels = [Channel.of(sym_rows, sym_owner, n), Channel.of(ctx_rows, ctx_owner, n)]
    best, entry, rescored = search_top1(channels, [sym_q, ctx_q], n)
    ref = _brute(sym_rows, sym_owner, n, sym_q).clamp_min(0) * _brute(
        ctx_rows, ctx_owner, n, ctx_q
    ).clamp_min(0)
    ref_best, ref_entry = ref.max(dim=1)
    assert torch.equal(entry, ref_entry)
    torch.testing.assert_close(best, ref_best, rtol=1e-5, atol=1e-6)
    assert int(rescored[::2].max()) < n // 16


def test_unstructured_queries_and_empty_queries_fall_back_to_brute_force():
    """Random queries against random keys leave most of the bank within the bound, and a query
    with no tokens has no prefilter: both are scored whole, still exactly."""
    rows, owner = _bank(400, 1, 256, seed=8)
    gen = torch.Generator().manual_seed(9)
    queries = [torch.randn(4, 256, generator=gen) for _ in range(3)] + [torch.zeros(0, 256)]
    best, entry, rescored = search_top1([Channel.of(rows, owner, 400)], [queries], 400)
    ref_best, ref_entry = _brute(rows, owner, 400, queries).max(dim=1)
    assert torch.equal(entry, ref_entry) and int(rescored[-1]) == 400
    torch.testing.assert_close(best, ref_best)


@pytest.mark.parametrize("mode", ["both_top1", "raw_both_top1", "average", "dual_key"])
def test_reading_through_the_search_decides_as_the_score_matrix(quick_fit, mode):
    from fmi.experiments.queries import build_queries, unique_bindings
    from fmi.memory.retrieve import decide, read_decide, read_queries, score_queries
    from fmi.memory.write import write_memory

    s = quick_fit
    split = s.task.split("same")
    entries = unique_bindings(split.bindings)
    _, memory = write_memory(s.model, entries, split.templates, s.fitted, s.cfg)
    qs = build_queries(split, entries)
    enc = memory.encoder
    got = read_queries(s.model, qs, (enc.symbol_site, enc.token_site), 16)
    args = (got.acts[enc.symbol_site], got.acts[enc.token_site], got.content)
    want = decide(mode, score_queries(memory, *args, modes=(mode,)), memory)
    have = read_decide(memory, mode, *args, min_search=0)
    assert torch.equal(have.entry, want.entry)
    assert want.active.any() and (~want.active).any()
    torch.testing.assert_close(have.vectors, want.vectors)
    on = want.active
    torch.testing.assert_close(have.score[on], want.score[on], rtol=1e-5, atol=1e-6)
    # an abstention's score is its best score, or an upper bound of it proved below threshold
    assert bool((have.score[~on] >= want.score[~on] - 1e-5).all())
    assert bool((have.score[~on] < memory.thresholds[mode]).all())


def test_a_threshold_abstains_without_ranking_what_cannot_reach_it():
    rows, owner = _bank(2000, 1, 64, seed=10)
    queries = _queries(rows, owner, 20, seed=11)
    ref_best, ref_entry = _brute(rows, owner, 2000, queries).max(dim=1)
    thr = float(ref_best.median())
    best, entry, rescored = search_top1([Channel.of(rows, owner, 2000)], [queries], 2000, thr)
    above = ref_best >= thr
    assert above.any() and (~above).any()
    assert torch.equal(entry[above], ref_entry[above])
    torch.testing.assert_close(best[above], ref_best[above], rtol=1e-5, atol=1e-6)
    low = ~above & (entry < 0)  # proved below without ranking: an upper bound, still below
    assert low.any() and bool((rescored[low] == 0).all())
    assert bool((best[low] >= ref_best[low] - 1e-6).all()) and bool((best[low] < thr).all())


def test_repeated_rows_share_one_code_and_stay_exact():
    """Rows that repeat up to float noise (a context's tokens in every statement of it) are
    scored once; the bound grows by their spread and the search stays exact."""
    n = 1200
    gen = torch.Generator().manual_seed(12)
    sym_rows, owner = _bank(n, 1, 64, seed=13)
    contexts = _unit(3, 64, gen=gen)
    noisy = contexts[torch.arange(n) % 3] + 1e-6 * torch.randn(n, 64, generator=gen)
    rows = torch.cat([sym_rows, torch.nn.functional.normalize(noisy, dim=-1)])
    owner = torch.cat([owner, torch.arange(n)])
    channel = Channel.of(rows, owner, n)
    # a copy whose noise crosses a rounding boundary keeps a code of its own: fewer shared
    assert n + 3 <= channel.codes.codes.shape[0] < n + 100
    assert 0 < channel.spread < 1e-4
    queries = _queries(sym_rows, torch.arange(n), 10, seed=14)
    queries = [torch.cat([q, 2 * contexts[i % 3][None]]) for i, q in enumerate(queries)]
    qs, mask = pad_queries([torch.nn.functional.normalize(q, dim=-1) for q in queries])
    approx, bound = approx_maxsim(qs, mask, channel)
    exact = _brute(rows, owner, n, queries)
    assert bool(((approx - exact).abs() <= bound[:, None]).all())
    best, entry, _ = search_top1([channel], [queries], n)
    ref_best, ref_entry = exact.max(dim=1)
    assert torch.equal(entry, ref_entry)
    torch.testing.assert_close(best, ref_best, rtol=1e-5, atol=1e-6)


def test_dual_key_scores_symbols_only_where_a_context_could_open(monkeypatch):
    """With a positive threshold, entries whose context bound cannot reach it are not scored on
    the symbol channel, and the decisions are still the brute-force ones."""
    import fmi.memory.search as search

    n, n_ctx = 2000, 10
    sym_rows, sym_owner = _bank(n, 2, 64, seed=15)
    contexts, _ = _bank(n_ctx, 1, 256, seed=16)  # near-orthogonal: one opens at a time
    ctx_owner = torch.arange(n)
    ctx_rows = contexts[ctx_owner % n_ctx]
    sym_q = _queries(sym_rows, sym_owner, 12, seed=17)  # every query names context 0
    ctx_q = [3 * contexts[:1] for _ in sym_q]
    channels = [Channel.of(sym_rows, sym_owner, n), Channel.of(ctx_rows, ctx_owner, n)]
    ref = _brute(sym_rows, sym_owner, n, sym_q).clamp_min(0) * _brute(
        ctx_rows, ctx_owner, n, ctx_q
    ).clamp_min(0)
    ref_best, ref_entry = ref.max(dim=1)
    thr = 0.3
    assert (ref_best >= thr).any() and (ref_best < thr).any()
    scored = []
    real_groups, real_entries = search.group_scores, search.entry_scores

    def spy_groups(*args, **kwargs):
        out = real_groups(*args, **kwargs)
        scored.append(("groups", out.shape[1]))
        return out

    def spy_entries(*args, **kwargs):
        out = real_entries(*args, **kwargs)
        scored.append(("entries", out.shape[1]))
        return out

    monkeypatch.setattr(search, "group_scores", spy_groups)
    monkeypatch.setattr(search, "entry_scores", spy_entries)
    best, entry, _ = search_top1(channels, [sym_q, ctx_q], n, threshold=thr)
    # the context channel once per context (its group), then symbols of context 0's entries only
    assert scored[0] == ("groups", n_ctx)
    assert scored[1][0] == "entries" and scored[1][1] <= n // n_ctx
    on = ref_best >= thr
    assert torch.equal(entry[on], ref_entry[on])
    torch.testing.assert_close(best[on], ref_best[on], rtol=1e-5, atol=1e-6)
    off = ~on & (entry < 0)
    assert bool((best[off] >= ref_best[off] - 1e-6).all()) and bool((best[off] < thr).all())
