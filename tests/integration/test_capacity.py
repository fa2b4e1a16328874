"""The capacity experiment: banks of any size, prefix-exact curves, the report, the benchmark."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from analyses.bench import BenchConfig, run_bench, summary_lines
from analyses.bench.bank import synthetic_bank
from analyses.capacity.bank import capacity_bindings
from analyses.capacity.config import CapacityConfig
from fmi.errors import ConfigError
from fmi.experiments.builtin_tasks import builtin_task
from fmi.memory.entry import CONTEXT_ROLE, SYMBOL_ROLE


def _quiet(_: str) -> None:
    pass


def test_capacity_bindings_are_prefix_stable_fresh_and_conflicting():
    task = builtin_task(seed=0, n_train=12, n_eval=6)
    seen = {b.symbol for b in task.train.bindings} | {b.symbol for b in task.split("same").bindings}
    big = capacity_bindings(40, seed=0, skip=18)
    assert capacity_bindings(12, seed=0, skip=18) == big[:12]
    assert len(big) == 40 and len({b.symbol for b in big}) == 20
    assert not seen & {b.symbol for b in big}
    for a, b in zip(big[::2], big[1::2], strict=True):
        assert a.symbol == b.symbol and (a.context, b.context) == ("game A", "game B")
        assert a.label != b.label


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sizes": (10, 15)}, "sizes"),
        ({"sizes": (100, 10)}, "increasing"),
        ({"lora_sizes": (20,)}, "lora_sizes"),
        ({"modes": ("nope",)}, "nope"),
        ({"read_queries": 0}, "read_queries"),
    ],
)
def test_capacity_config_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        CapacityConfig(**overrides)


@pytest.fixture(scope="module")
def capacity_run(tiny_gemma, tmp_path_factory):
    from analyses.capacity.run import run_capacity

    out = tmp_path_factory.mktemp("capacity")
    cfg = CapacityConfig.quick_config()
    doc, path = run_capacity(cfg, out, model=tiny_gemma, json_path=out / "c.json", announce=_quiet)
    return cfg, doc, path, out


def test_capacity_report_has_every_row_and_no_hook_left(capacity_run, tiny_gemma):
    cfg, doc, path, out = capacity_run
    assert path.exists() and path.name == "capacity.html"
    saved = json.loads((out / "c.json").read_text())
    assert [(r["size"], r["mode"]) for r in saved["curve"]] == [
        (n, m) for n in cfg.sizes for m in cfg.modes
    ]
    assert [(r["size"], r["rank"]) for r in saved["lora"]] == [
        (n, r) for n in cfg.lora_sizes for r in cfg.lora.ranks
    ]
    for r in saved["curve"]:
        for key in ("read", "retrieval", "injection", "plain", "unrelated_changed"):
            assert 0.0 <= r[key] <= 1.0
        assert r["n"] == min(r["size"], cfg.read_queries)
    head = saved["header"]
    for key in ("model", "config", "versions", "git", "seeds", "sites"):
        assert key in head
    assert all(not hp.fwd_hooks for hp in tiny_gemma.bridge.hook_dict.values())
    assert "cdn" not in path.read_text().lower()


def test_lora_rows_carry_their_tuning_and_retention(capacity_run):
    cfg, doc, _, _ = capacity_run
    lc = cfg.lora
    n_cfg = len(lc.lrs) * len(lc.step_grid)
    for r in doc["lora"]:
        assert r["lr"] in lc.lrs and r["steps"] in lc.step_grid
        assert len(r["train_losses"]) == r["steps"]
        assert r["tuning_budget"].startswith(f"{n_cfg} configurations (2 lrs x 2 step counts")
        assert f"at N={lc.tune_size} on training bindings" in r["tuning_budget"]
        tuning = r["tuning"]
        assert [(p["lr"], p["steps"]) for p in tuning["curve"]] == [
            (lr, k) for lr in lc.lrs for k in lc.step_grid
        ]
        assert tuning["size"] == lc.tune_size and tuning["read_prompts"] == lc.tune_size
        chosen = {k: v for k, v in tuning["chosen"].items() if k != "within_bound"}
        assert chosen in tuning["curve"]
        assert (tuning["chosen"]["lr"], tuning["chosen"]["steps"]) == (r["lr"], r["steps"])
        ret = r["retention"]
        assert ret["weight"] == lc.retention_weight and ret["prompts"] == lc.retention_prompts
        assert len(ret["kl"]) == r["steps"] and ret["kl"][0] == 0.0  # B = 0 before step 1
    same_rank = [r for r in doc["lora"] if r["rank"] == lc.ranks[0]]
    assert len({(r["lr"], r["steps"]) for r in same_rank}) == 1  # tuned once, used at every N


def test_lora_single_grid_is_not_tuned(tiny_gemma):
    from analyses.capacity.lora.config import LoraConfig
    from analyses.capacity.lora_curve import tuned_settings
    from fmi.experiments.recall import task_for

    lora = LoraConfig(ranks=(1, 2), lrs=(1e-2,), step_grid=(3,), retention_weight=0.0)
    cfg = CapacityConfig.quick_config(lora=lora)
    said: list[str] = []
    retention, settings = tuned_settings(tiny_gemma, task_for(cfg.recall).train, cfg, said.append)
    assert retention is None and not said
    for rank in (1, 2):
        assert settings[rank]["lr"] == 1e-2 and settings[rank]["steps"] == 3
        assert settings[rank]["tuning"] is None
        assert settings[rank]["tuning_budget"].startswith("none: 1 configuration")


def test_lora_tuning_data_is_training_data_only(tiny_gemma):
    """Tuning bindings are training symbols (never a capacity word) read by their own training
    questions; retention and tuning-check prompts are training unrelated prompts, disjoint from
    each other and, by question, from the evaluation prompts the rows report."""
    from analyses.capacity.lora_curve import lora_training_data
    from fmi.experiments.builtin_tasks import N_TRAIN_QUESTIONS
    from fmi.experiments.questions import split_questions
    from fmi.experiments.recall import task_for
    from fmi.experiments.tasks import question_of

    cfg = CapacityConfig.quick_config()
    task = task_for(cfg.recall)
    model = tiny_gemma
    retain, held, statements, targets, reads = lora_training_data(model, task.train, cfg.lora)
    assert len(retain) == cfg.lora.retention_prompts and set(retain).isdisjoint(held)
    assert sorted(retain + held) == sorted(task.train.unrelated)
    train_q, eval_q = split_questions(task.seed, N_TRAIN_QUESTIONS)
    assert {question_of(u) for u in retain + held} <= set(train_q)
    evaluated = {question_of(u) for u in task.split("same").unrelated}
    assert evaluated.isdisjoint(question_of(u) for u in retain + held)
    assert set(eval_q) >= evaluated
    assert len(statements) == len(reads) == len(targets) == cfg.lora.tune_size
    said = {s.split(", ")[1].removesuffix(" means") for s in statements}  # In C, WORD means
    asked = {r.split("what is ")[1].removesuffix("? Answer:") for r in reads}
    assert said == asked and len(said) == cfg.lora.tune_size // 2
    assert said <= {b.symbol for b in task.train.bindings}
    assert said.isdisjoint(b.symbol for b in capacity_bindings(max(cfg.sizes), cfg.seed, 18))
    bigger = replace(cfg.lora, retention_prompts=len(task.train.unrelated))
    with pytest.raises(ConfigError, match="retention_prompts"):
        lora_training_data(model, task.train, bigger)
    with pytest.raises(ConfigError, match="tune_size"):
        lora_training_data(model, task.train, replace(cfg.lora, tune_size=1000))


def test_search_rows_agree_with_the_score_matrix_at_every_size(capacity_run):
    """The report's retrieval-cost rows: the search chose every query's entry as the full score
    matrix did, and rescored at most the whole bank."""
    cfg, doc, _, _ = capacity_run
    assert [(r["size"], r["mode"]) for r in doc["search"]] == [
        (n, m) for n in cfg.sizes for m in cfg.modes
    ]
    for r in doc["search"]:
        assert r["same_entries"] == r["queries"] > 0
        assert r["matrix_ms"] > 0 and r["search_ms"] > 0
        assert set(r["rescored_max"]) <= {"write", "read", "plain", "unrelated"}
        assert all(0 <= v <= r["size"] for v in r["rescored_max"].values())  # 0: proved below


def test_a_prefix_of_the_bank_reads_like_a_bank_written_alone(tiny_gemma):
    """Size N's decisions (columns :N of the largest bank's scores) equal those of a memory
    holding only the first N bindings, scored from scratch."""
    from analyses.capacity.measure import decisions, write_bank
    from fmi.experiments.recall import task_for
    from fmi.memory.fit import fit
    from fmi.memory.retrieve import decide, read_queries, score_queries
    from fmi.memory.write import write_memory

    cfg = CapacityConfig.quick_config()
    task = task_for(cfg.recall)
    fitted = fit(tiny_gemma, task.train, cfg.recall)
    bindings = capacity_bindings(max(cfg.sizes), cfg.seed, skip=18)
    split = task.split("same")
    bank = write_bank(tiny_gemma, bindings, split, fitted, cfg)
    chosen = decisions(bank, cfg)
    n = cfg.sizes[1]
    _, alone = write_memory(tiny_gemma, bindings[:n], split.templates, fitted, cfg.recall)
    qs = bank.qs.subset(bank.rows[n])
    enc = fitted.encoder
    got = read_queries(tiny_gemma, qs, (enc.symbol_site, enc.token_site), 8)
    scores = score_queries(alone, got.acts[enc.symbol_site], got.acts[enc.token_site], got.content)
    for mode in cfg.modes:
        fresh = decide(mode, scores, alone, gate=qs.gate)
        assert torch.equal(fresh.entry, chosen[(n, mode)].entry), mode
        torch.testing.assert_close(fresh.score, chosen[(n, mode)].score, atol=1e-4, rtol=1e-4)


def test_bench_measures_every_figure(tiny_neox):
    cfg = BenchConfig.quick_config(bank_sizes=(50, 200))
    doc = run_bench(cfg, model=tiny_neox, announce=_quiet)
    assert doc["write"]["ratio"] > 0 and doc["generation"]["plain_s"] > 0
    for mode in cfg.modes:
        assert doc["generation"][mode]["ratio"] > 0
        assert doc["loaded"]["generation"][mode]["ratio"] > 0
        for case in (doc, doc["loaded"]):
            for bank in ("written", "random"):
                by_size = case["retrieval_ms_per_query"][bank][mode]
                assert set(by_size) == {50, 200}
                for row in by_size.values():
                    assert row["matrix"] > 0 and row["search"] > 0 and row["read"] > 0
                    assert row["same_entries"] == 1.0  # the search is exact, either way
                    assert row["read_way"] in ("search", "matrix") and row["threads"] >= 1
                    assert 1 <= row["rescored"] <= 200
    busy = doc["loaded"]["busy_process"]
    assert busy["alive_at_end"] and 0 < busy["seconds"] < busy["limit_s"]
    assert doc["peak_memory"]["rss_mib"] > 0
    m = doc["multi_token"]
    assert m["answer_tokens"] == 3 and m["labels"] and m["write_ratio"] > 0
    assert m["generation_ratio"] > 0 and 0.0 <= m["read_exact"] <= 1.0
    lines = summary_lines(doc)
    assert any("write / forward" in x for x in lines)
    assert any(x.startswith("3-token answers: write / forward") for x in lines)
    assert any(x.startswith("loaded (one core busy") for x in lines)
    assert any(x.startswith("  random bank, dual_key: retrieval") for x in lines)
    assert all(not hp.fwd_hooks for hp in tiny_neox.bridge.hook_dict.values())


def test_synthetic_bank_has_the_shape_of_the_memory(quick_setup):
    from fmi.memory.write import write_memory

    s = quick_setup
    split = s.task.split("same")
    _, memory = write_memory(s.model, list(split.bindings), split.templates, s.fitted, s.cfg.recall)
    n = len(memory) + 30
    bank = synthetic_bank(memory, n, seed=0)
    n_sym, n_ctx = (
        max(1, round(int((memory.token_role == r).sum()) / len(memory)))
        for r in (SYMBOL_ROLE, CONTEXT_ROLE)
    )
    rows = 30 * (n_sym + n_ctx) + len(memory.token_keys)
    assert len(bank) == n and bank.token_keys.shape == (rows, memory.token_keys.shape[1])
    assert set(bank.token_owner.tolist()) == set(range(n))
    # every written entry is in the bank with its own keys, value and key tokens
    for i, entry in enumerate(memory.entries):
        at = bank.entries.index(entry)
        assert torch.equal(bank.symbol_keys[at], memory.symbol_keys[i])
        assert torch.equal(bank.values[at], memory.values[i])
        mine, theirs = bank.token_owner == at, memory.token_owner == i
        assert torch.equal(bank.token_keys[mine], memory.token_keys[theirs])
        assert torch.equal(bank.token_role[mine], memory.token_role[theirs])
    # the random entries' keys, standardized, are standard normal
    fake = torch.tensor([j for j, e in enumerate(bank.entries) if e not in memory.entries])
    z = memory.encoder.symbol_std(bank.symbol_keys[fake])
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.1
    # and their context rows are those of n // 100 = 1 shared context
    ctx = torch.isin(bank.token_owner, fake) & (bank.token_role == CONTEXT_ROLE)
    assert int(ctx.sum()) == 30 * n_ctx
    assert len(torch.unique(bank.token_keys[ctx], dim=0)) == n_ctx


def test_cli_capacity_and_bench_reject_bad_sizes(capsys):
    from analyses.cli.main import main

    assert main(["capacity", "--quick", "--sizes", "4,x"]) != 0
    assert "--sizes" in capsys.readouterr().err
    assert main(["capacity", "--quick", "--sizes", "5"]) != 0
    assert "even" in capsys.readouterr().err


def test_report_rebuilds_from_its_json_and_fits_only_unmemorized_rows(capacity_run, tmp_path):
    from analyses.capacity.lora_curve import MEMORIZED, loss_law
    from analyses.cli.main import main

    _, _, _, out = capacity_run
    saved = tmp_path / "c.json"
    saved.write_text((out / "c.json").read_text())
    assert main(["capacity", "--from-json", str(saved), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "capacity.html").exists()
    rows = [
        {"size": n, "rank": r, "loss": 2.0 * n**0.5 * r**-0.25}
        for n in (10, 100, 1000)
        for r in (1, 4, 16)
    ]
    rows.append({"size": 10, "rank": 16, "loss": MEMORIZED / 10})  # memorized: left out
    law = loss_law(rows)
    assert not isinstance(law, str) and law.n_points == 9
    assert abs(law.exponents["N"] - 0.5) < 1e-6 and abs(law.exponents["r"] + 0.25) < 1e-6
    assert isinstance(loss_law(rows[-1:]), str)  # nothing left to fit: a reason, not a law


def test_random_bank_matches_nothing_and_abstains_nowhere(quick_setup):
    from analyses.bench.bank import random_bank
    from fmi.memory.write import write_memory

    s = quick_setup
    split = s.task.split("same")
    _, memory = write_memory(s.model, list(split.bindings), split.templates, s.fitted, s.cfg.recall)
    bank = random_bank(memory, 40, seed=0)
    assert len(bank) == 40 and bank.thresholds == {}
    assert not any(
        torch.equal(bank.symbol_keys[j], memory.symbol_keys[i])
        for j in range(40)
        for i in range(len(memory))
    )
    # every entry has context rows of its own
    ctx = bank.token_role == CONTEXT_ROLE
    n_ctx = int(ctx.sum()) // 40
    assert len(torch.unique(bank.token_keys[ctx], dim=0)) == 40 * n_ctx
