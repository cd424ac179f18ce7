"""Deterministic batching on a fake model: the pad plan keeps every ubatch two rows wide, and the
decode loop hands the backend only the shapes that plan covers."""

from __future__ import annotations

import random

import pytest
import trio

from tests.examples.llama_fakes import FakeBackend, import_llama_module

ubatch = import_llama_module("llama_ubatch")
engine_mod = import_llama_module("llama_engine")
Engine, Finished, Sampling = engine_mod.Engine, engine_mod.Finished, engine_mod.Sampling


def runs(ids):
    """Runs of consecutive ids: what llama.cpp's split_equal makes one ubatch each of."""
    out = []
    for seq in sorted(ids):
        if out and out[-1][-1] + 1 == seq:
            out[-1].append(seq)
        else:
            out.append([seq])
    return out


def test_a_lone_token_gets_a_neighbour_and_a_prompt_chunk_needs_none():
    assert ubatch.pads([3], n_seq=8) == [4]
    assert ubatch.pads([7], n_seq=8) == [6]
    assert ubatch.pads([5, 5, 5], n_seq=8) == []  # one sequence's chunk: one ubatch that wide


def test_short_gaps_are_filled_and_lone_runs_get_a_neighbour():
    assert ubatch.pads([0, 1, 3, 4], n_seq=8) == [2]
    assert ubatch.pads([0, 2], n_seq=3) == [1]
    far = ubatch.pads([0, 1, 20], n_seq=32, max_gap=8)
    assert far == [21]  # a gap of 18 stays: two ubatches, each two rows or more


def test_every_run_is_two_rows_or_more_for_any_set_of_sequences():
    rng = random.Random(7)
    for _ in range(500):
        n_seq = rng.randint(2, 40)
        seqs = rng.sample(range(n_seq), rng.randint(1, n_seq))
        pads = ubatch.pads(seqs, n_seq)
        assert not set(pads) & set(seqs)
        assert all(0 <= p < n_seq for p in pads)
        assert all(len(run) >= 2 for run in runs(seqs + pads)), (seqs, pads)


def test_several_sequences_with_several_tokens_each_are_refused():
    with pytest.raises(ValueError, match="one token of each"):
        ubatch.pads([1, 1, 2], n_seq=4)


class DeterministicFake(FakeBackend):
    """The fake model, asking the loop for deterministic-mode batches."""

    deterministic = True


async def test_the_loop_sends_one_token_per_sequence_or_one_sequence_per_decode():
    backend = DeterministicFake(["a", "b"], token_s=0.001, parallel=4, chunk=16)
    with Engine(backend) as engine, trio.fail_after(10):
        out = {}

        async def one(name, tokens, n):
            pieces = []
            async with engine.open_stream(tokens, Sampling(max_tokens=n)) as items:
                async for item in items:
                    pieces.append(item)
            out[name] = pieces

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "short", [1, 2], 30)
            nursery.start_soon(one, "long", list(range(3, 43)), 5)  # 40 tokens: 3 chunks
            nursery.start_soon(one, "third", [7, 8, 9], 12)
    assert out["short"][-1] == Finished("length", 2, 30)
    assert out["long"][-1] == Finished("length", 40, 5)
    assert "".join(p for p in out["third"] if isinstance(p, str)) == "ab" * 6
    for batch in backend.batches:
        seqs = [seq for _, _, seq in batch]
        assert len(set(seqs)) == 1 or len(set(seqs)) == len(seqs), batch
