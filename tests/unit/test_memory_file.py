"""Memory entries with answer sequences, and the memory file: round trip, atomicity, refusals."""

from __future__ import annotations

import pytest
import torch

from fmi.errors import MemoryFileError, MemoryMismatchError
from fmi.memory.entry import Entry, KeyEncoder
from fmi.memory.keys import Standardizer
from fmi.memory.store import FastMemory
from fmi.reporting.atomic import write_atomically

D = 64  # tiny-neox's d_model


def _memory(name: str = "tiny-neox") -> FastMemory:
    g = torch.Generator().manual_seed(0)
    std = Standardizer(torch.zeros(D), torch.ones(D))
    entries = [
        Entry("game A", "blicket", "red", 7),
        Entry("", "Alice", "green tea", 11, (11, 12, 13), True),  # " green", " tea", end
        Entry("lab north", "dax", "New York City", 21, (21, 22, 23, 24), True),
    ]
    return FastMemory(
        model_name=name,
        d_model=D,
        inject_site="ln_final.hook_out",
        alpha=2.0,
        encoder=KeyEncoder("blocks.1.hook_resid_post", "blocks.0.hook_resid_post", std, std),
        entries=entries,
        values=torch.randn(3, D, generator=g),
        symbol_keys=torch.randn(3, D, generator=g),
        token_keys=torch.randn(5, D, generator=g),
        token_owner=torch.tensor([0, 0, 1, 2, 2]),
        token_role=torch.tensor([0, 1, 0, 0, 1]),
        thresholds={"dual_key": 0.5},
        tail_values=torch.randn(5, D, generator=g),
        tail_owner=torch.tensor([1, 1, 2, 2, 2]),
    )


def test_sequence_is_the_first_value_then_the_entry_tail_in_order():
    mem = _memory()
    assert torch.equal(mem.sequence(0), mem.values[:1])
    assert torch.equal(mem.sequence(1), torch.cat([mem.values[1:2], mem.tail_values[0:2]]))
    assert torch.equal(mem.sequence(2), torch.cat([mem.values[2:3], mem.tail_values[2:5]]))
    for e, entry in enumerate(mem.entries):
        assert mem.sequence(e).shape[0] == len(entry.answer)


def test_entry_tokens_must_start_with_the_target():
    assert Entry("c", "s", "l", 5).answer == (5,)
    with pytest.raises(ValueError, match="start with target 5"):
        Entry("c", "s", "l", 5, (6, 7))


def test_head_keeps_the_tails_of_the_first_entries():
    head = _memory().head(2)
    assert torch.equal(head.tail_owner, torch.tensor([1, 1]))
    assert torch.equal(head.sequence(1), _memory().sequence(1))


def test_round_trip_keeps_entries_and_every_tensor(tiny_neox, tmp_path):
    mem = _memory()
    path = tmp_path / "m.fmi.safetensors"
    mem.save(path)
    back = FastMemory.load(path, tiny_neox)
    assert back.entries == mem.entries
    for e in range(len(mem)):
        assert torch.equal(back.sequence(e), mem.sequence(e))
    assert back.thresholds == mem.thresholds and back.alpha == mem.alpha
    assert [p.name for p in tmp_path.iterdir()] == ["m.fmi.safetensors"]  # no temp file left


def test_a_write_killed_midway_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("old")

    def dies(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt  # as a kill between writing and renaming

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, dies)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.txt"]


def test_foreign_model_is_refused(tiny_gemma, tmp_path):
    path = tmp_path / "m.fmi.safetensors"
    _memory().save(path)
    with pytest.raises(MemoryMismatchError, match="tiny-neox"):
        FastMemory.load(path, tiny_gemma)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_damaged_files_get_one_error_naming_the_file(tiny_neox, tmp_path, damage):
    path = tmp_path / "m.fmi.safetensors"
    _memory().save(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01not a safetensors file" * 10)
    else:
        path = tmp_path / "absent.fmi.safetensors"
    with pytest.raises(MemoryFileError, match=str(path.name)):
        FastMemory.load(path, tiny_neox)


def _naive_sequences(mem: FastMemory) -> list[torch.Tensor]:
    return [mem.sequence(e) for e in range(len(mem))]


@pytest.mark.parametrize("rows", [[0, 1, 2], [2, 0], [1], [2, 1, 0], []])
def test_select_equals_a_naive_per_entry_rebuild(rows):
    mem = _memory()
    got = mem.select(rows)
    assert got.entries == [mem.entries[r] for r in rows]
    for new, old in enumerate(rows):
        assert torch.equal(got.sequence(new), mem.sequence(old))
        assert torch.equal(got.symbol_keys[new], mem.symbol_keys[old])
        for role in (0, 1):  # the entry's token keys, in their original order
            mine = got.token_keys[(got.token_owner == new) & (got.token_role == role)]
            theirs = mem.token_keys[(mem.token_owner == old) & (mem.token_role == role)]
            assert torch.equal(mine, theirs)
    assert len(got.token_keys) == sum(int((mem.token_owner == r).sum()) for r in rows)


def test_select_refuses_duplicates_and_out_of_range():
    with pytest.raises(ValueError, match="distinct"):
        _memory().select([0, 0])
    with pytest.raises(ValueError, match="distinct"):
        _memory().select([3])
