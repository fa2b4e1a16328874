"""The rules that keep reading fast on a shared CPU (issue 20), on hand-made cases: the thread
rule, the search-or-matrix rule, and the search's vectorized parts against naive loops."""

from __future__ import annotations

import pytest
import torch

import fmi.memory.codes as codes
from fmi.core.threads import free_threads, other_running, torch_threads
from fmi.errors import ConfigError
from fmi.memory.codes import Channel, QueryCodes, code_scores, group_scores, repeat_first
from fmi.memory.keys import maxsim, pad_queries
from fmi.memory.plan import MATRIX, SEARCH, ReadPlan
from fmi.memory.search import _rescore, _top_per_query, search_top1


def _unit(*shape: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=gen), dim=-1)


# --- threads -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "others", "limit", "want"),
    [
        (2, 0, 2, 2),
        (2, 1, 2, 1),
        (2, 2, 2, 1),
        (2, 9, 2, 1),
        (16, 3, 8, 8),
        (16, 12, 8, 4),
        (4, None, 3, 3),
    ],
)
def test_threads_are_the_cores_others_leave_free(cores, others, limit, want):
    assert free_threads(cores, others, limit) == want


def _fake_proc(tmp_path, procs_running: int, states: list[str]):
    (tmp_path / "stat").write_text(f"cpu  1 2 3\nprocs_running {procs_running}\nprocs_blocked 0\n")
    for i, state in enumerate(states):
        task = tmp_path / "self" / "task" / str(100 + i)
        task.mkdir(parents=True)
        task.joinpath("stat").write_text(f"{100 + i} (python (x) y) {state} 1 2 3\n")
    return tmp_path


def test_other_running_subtracts_this_process_running_threads(tmp_path):
    # 5 runnable on the machine, 2 of them this process's (one sleeping thread does not count);
    # a command name with spaces and parentheses does not confuse the parser
    assert other_running(_fake_proc(tmp_path, 5, ["R", "S", "R"])) == 3
    assert other_running(tmp_path / "missing") is None


def test_other_running_never_goes_below_zero(tmp_path):
    assert other_running(_fake_proc(tmp_path, 1, ["R", "R"])) == 0


def test_the_reading_is_reused_for_a_tenth_of_a_second(monkeypatch):
    import fmi.core.threads as threads

    reads = iter([1, 0, 0])
    monkeypatch.setattr(threads, "other_running", lambda: next(reads))
    monkeypatch.setattr(threads, "_SEEN", [])
    assert threads.other_running_recently(now=100.0) == 1
    assert threads.other_running_recently(now=100.09) == 1  # reused
    assert threads.other_running_recently(now=100.11) == 0  # stale: read again


def test_torch_threads_restores_the_setting_after_an_exception():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


# --- search or matrix ----------------------------------------------------------------------


def test_the_plan_measures_the_search_first_and_keeps_it_when_it_is_cheap():
    plan = ReadPlan(explore_every=4)
    assert plan.choose("m", predicted=1.0) == SEARCH
    plan.record("m", SEARCH, seconds=1.0, queries=10)  # 0.1 per query, prediction 1.0
    assert [plan.choose("m", predicted=1.0) for _ in range(6)] == [SEARCH] * 6
    assert (("m", MATRIX) in plan.cost) is False  # never paid for a matrix


def test_the_plan_falls_back_to_the_matrix_and_explores_the_search():
    plan = ReadPlan(explore_every=4, weight=1.0)
    plan.choose("m", predicted=1.0)
    plan.record("m", SEARCH, seconds=6.0, queries=10)  # 0.6 >= 0.5 x 1.0: suspect
    assert plan.choose("m", predicted=1.0) == MATRIX  # call 1: measure the matrix
    plan.record("m", MATRIX, seconds=3.0, queries=10)  # 0.3: the matrix is cheaper
    got = [plan.choose("m", predicted=1.0) for _ in range(8)]  # calls 2..9
    assert got == [MATRIX, MATRIX, SEARCH, MATRIX, MATRIX, MATRIX, SEARCH, MATRIX]
    plan.record("m", SEARCH, seconds=1.0, queries=10)  # the search got cheaper: switch back
    assert plan.choose("m", predicted=1.0) == SEARCH  # call 10
    assert plan.choose("other", predicted=1.0) == SEARCH  # modes are apart


def test_the_plan_averages_its_measurements():
    plan = ReadPlan(weight=0.25)
    plan.record("m", SEARCH, seconds=4.0, queries=4)
    plan.record("m", SEARCH, seconds=8.0, queries=4)
    assert plan.cost[("m", SEARCH)] == pytest.approx(0.25 * 2.0 + 0.75 * 1.0)


def test_read_decide_takes_either_way_to_the_same_decision(quick_fit):
    from fmi.experiments.queries import build_queries, unique_bindings
    from fmi.memory.retrieve import read_decide, read_queries
    from fmi.memory.write import write_memory

    s = quick_fit
    split = s.task.split("same")
    entries = unique_bindings(split.bindings)
    _, memory = write_memory(s.model, entries, split.templates, s.fitted, s.cfg)
    got = read_queries(
        s.model,
        build_queries(split, entries),
        (memory.encoder.symbol_site, memory.encoder.token_site),
        16,
    )
    enc = memory.encoder
    args = (got.acts[enc.symbol_site], got.acts[enc.token_site], got.content)
    searched = read_decide(memory, "dual_key", *args, min_search=0, way="search")
    matrix = read_decide(memory, "dual_key", *args, min_search=0, way="matrix")
    auto = read_decide(memory, "dual_key", *args, min_search=0)
    assert torch.equal(searched.entry, matrix.entry) and torch.equal(auto.entry, matrix.entry)
    assert {w for _, w in memory.read_plan.cost} == {SEARCH, MATRIX}  # both were measured
    with pytest.raises(ConfigError, match="way must be"):
        read_decide(memory, "dual_key", *args, min_search=0, way="fast")


# --- the vectorized parts against loops ----------------------------------------------------


def test_code_scores_equal_a_loop_over_queries_tokens_and_codes(monkeypatch):
    monkeypatch.setattr(codes, "BLOCK_BYTES", 1024)  # blocks of 256 codes: several blocks
    keys = codes.Quantized.of(_unit(700, 16, seed=1))
    queries = [_unit(n, 16, seed=10 + n) for n in (3, 1, 5)]
    queries[2][4] = queries[0][1]  # a row two queries share is coded once
    qs, mask = pad_queries(queries)
    coded = QueryCodes.of(qs, mask)
    assert len(coded.codes) == 3 + 1 + 5 - 1
    got = code_scores(coded, keys)
    want = torch.zeros(3, 700)
    for qi in range(3):
        for k in range(700):
            best = max(
                int((coded.codes[coded.index[qi, t]].int() * keys.codes[k].int()).sum())
                for t in range(int(mask[qi].sum()))
            )
            want[qi, k] = best / (coded.scale * float(keys.scale[k]))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_entries_that_share_their_codes_form_one_group_scored_as_their_mean():
    ctx = _unit(3, 16, seed=2)
    owner = torch.arange(9).repeat_interleave(2)
    which = torch.tensor([0, 1, 0, 1, 0, 1, 2, 1, 2, 1, 2, 1, 0, 2, 0, 2, 0, 2])
    channel = Channel.of(ctx[which], owner, 9)
    # entries 0-2 hold contexts {0, 1}, 3-5 {2, 1} (rows in another order), 6-8 {0, 2}
    assert channel.n_groups == 3 and len(channel.codes.codes) == 3
    g = channel.group.tolist()
    assert g[0:3] == [g[0]] * 3 and g[3:6] == [g[3]] * 3 and g[6:9] == [g[6]] * 3
    assert len({g[0], g[3], g[6]}) == 3
    qs, mask = pad_queries([_unit(2, 16, seed=3)])
    coded = QueryCodes.of(qs, mask)
    per_code = code_scores(coded, channel.codes)
    scores = group_scores(coded, channel)
    for g in range(3):
        members = channel.member_code[channel.member_starts[g] : channel.member_starts[g + 1]]
        torch.testing.assert_close(scores[0, g], per_code[0, members].mean())


def test_rescoring_every_pair_at_once_equals_a_loop():
    rows, owner = (
        _unit(60, 8, seed=4),
        torch.randint(0, 20, (60,), generator=torch.Generator().manual_seed(5)),
    )
    channel = Channel.of(rows, owner, 20)
    queries = [_unit(n, 8, seed=20 + n) for n in (2, 4, 3)]
    qs, mask = pad_queries(queries)
    pair_q = torch.tensor([0, 0, 1, 2, 2, 2])
    pair_e = torch.tensor([3, 7, 0, 1, 7, 19])
    got = _rescore(channel, repeat_first(qs, mask), pair_q, pair_e)
    for i, (q, e) in enumerate(zip(pair_q.tolist(), pair_e.tolist(), strict=True)):
        mine = rows[owner == e]
        want = (queries[q] @ mine.T).amax(dim=0).mean() if len(mine) else torch.tensor(0.0)
        torch.testing.assert_close(got[i], want)


def test_top_per_query_takes_the_first_of_tied_best_pairs():
    scores = torch.tensor([0.5, 0.9, 0.9, 0.1, 0.3, 0.3])
    pair_q = torch.tensor([0, 0, 0, 1, 3, 3])
    top, first = _top_per_query(scores, pair_q, 4)
    assert top.tolist()[:2] == pytest.approx([0.9, 0.1]) and top[2] == float("-inf")
    assert first.tolist() == [1, 3, 6, 4]  # query 2 has no pair: len(scores)


@pytest.mark.parametrize("per", [1, 2])
def test_search_in_many_small_blocks_equals_brute_force(monkeypatch, per):
    """Pairs kept against an early, lower running best are dropped once the best is known."""
    monkeypatch.setattr(codes, "BLOCK_BYTES", 4096)
    n = 3000
    rows = _unit(n * per, 32, seed=6)
    owner = torch.arange(n).repeat(per)
    gen = torch.Generator().manual_seed(7)
    queries = [
        torch.cat(
            [
                4 * rows[owner == (911 * i) % n] + 0.3 * torch.randn(per, 32, generator=gen),
                torch.randn(2, 32, generator=gen),
            ]
        )
        for i in range(12)
    ]
    best, entry, _ = search_top1([Channel.of(rows, owner, n)], [queries], n)
    qs, mask = pad_queries(queries)
    ref_best, ref_entry = maxsim(qs, mask, rows, owner, n).max(dim=1)
    assert torch.equal(entry, ref_entry)
    torch.testing.assert_close(best, ref_best, rtol=1e-5, atol=1e-6)
