"""Batch-invariant decoding on llama.cpp's CPU kernels: the pad tokens that keep every ubatch wide.

Why a sequence's output depended on its batch-mates (measured with Gemma 3 270M, bit for
bit, docs/llama.md): llama.cpp's CPU matrix products choose their kernel by the batch's
width and the kernels sum in different orders. One row runs a dot product per output
(`vec_dot`), two or more run llamafile's tinyBLAS (Q8_0, Q5_0, F16 weights and the attention
products), eight or more K-quant rows the "tiled" kernel, and repacked weights (the extra
buffer types) gemv below four rows and gemm above. And over a unified KV cache a sequence's
cells sit between other sequences' cells, which moves its terms across the SIMD lanes of
the attention sums. Each shifts the logits in their last bits; greedy ties then part ways.

Deterministic mode (LLAMA_DETERMINISTIC, on by default) removes every cause: each sequence
has its own KV stream (its cells are positions 0.. of its own buffer, whatever runs beside
it), the weights load without repacking and the tiled kernel is off (GGML_CPU_TILED_MM=0),
so every product of two or more rows sums each output the same way at any width, and every
ubatch is at least two rows wide. That last part is this module's.

llama.cpp cuts a batch over several streams into ubatches of *consecutive* sequence ids with
the same number of tokens each (`split_equal`). So the backend sorts a batch's tokens by
sequence, and `pads` adds one pad token to each sequence id in a short gap between two runs
of ids (a row costs far less than another pass over the weights) and, to a lone token, one
to a neighbouring id. A pad is put after the last cell of a sequence that is not in the
batch, asks for no logits and is removed after the decode, so that sequence's cache is as
it was.
"""

from __future__ import annotations

from collections.abc import Sequence

# Gaps of up to this many ids between runs are filled with pads: one more row each, against
# one more pass over the weights for an unfilled gap.
MAX_GAP = 8


def pads(seqs: Sequence[int], n_seq: int, max_gap: int = MAX_GAP) -> list[int]:
    """Sequence ids that get one pad token each, for a batch of tokens of sequences `seqs`.

    Either every sequence of the batch has one token (a generation step) or the batch is one
    sequence's prompt chunk; ids run from 0 to n_seq - 1 (n_seq >= 2).
    """
    unique = sorted(set(seqs))
    if len(unique) == 1:
        if len(seqs) > 1:
            return []  # one sequence, several tokens: one ubatch of that width
        seq = unique[0]
        return [seq + 1 if seq + 1 < n_seq else seq - 1]
    if len(unique) != len(seqs):
        raise ValueError("a batch of several sequences must hold one token of each")
    filled: list[int] = []
    for low, high in zip(unique, unique[1:], strict=False):
        if 1 < high - low <= max_gap + 1:
            filled.extend(range(low + 1, high))
    runs = _runs(sorted(unique + filled))
    for run in runs:
        if len(run) == 1:  # a run that stayed alone: give it a neighbour
            seq = run[0]
            filled.append(seq + 1 if seq + 1 < n_seq else seq - 1)  # not in the batch
    return sorted(set(filled))


def _runs(ids: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for seq in ids:
        if runs and runs[-1][-1] + 1 == seq:
            runs[-1].append(seq)
        else:
            runs.append([seq])
    return runs
