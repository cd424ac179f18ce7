"""The real model: llama.cpp through llama-cpp-python's low-level bindings, behind the engine's Backend.

One generation context holds every sequence. In deterministic mode (the default) each
sequence id has its own KV stream of `n_ctx` cells, and a sequence's output does not depend
on what else is in the batch (llama_ubatch.py says why and how). Otherwise the KV cache is
*unified* (`kv_unified`): one pool of `kv_tokens` cells for running and cached sequences,
and one `llama_decode` is one graph whatever the sequence ids, at the price of outputs that
vary with the batch in their last bits. Gemma 3's sliding-window layers keep full-size
caches (`swa_full`) so that a cached prefix can be cut at any position and extended. Each
sequence samples with its own llama.cpp sampler chain.

Embeddings use a second context on the same (memory-mapped) model, created on first use:
several inputs per `llama_decode`, one sequence id each, mean-pooled by llama.cpp.

Every method here blocks in C calls that release the GIL; the engine calls them from its
decode thread (generation) or a worker thread (embeddings).
"""

from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpu
import llama_ubatch
from llama_types import Sampling

DEFAULT_N_CTX = 4096
DEFAULT_PARALLEL = 8
DEFAULT_CHUNK = 256
EMBED_CTX = 2048
EMBED_SEQS = 32
PENALTY_LAST_N = 64


class BackendUnavailable(Exception):
    """llama-cpp-python is missing or the model file cannot be loaded."""


class DecodeFailed(Exception):
    """llama_decode returned an error for a batch."""


@dataclass(frozen=True)
class LlamaSettings:
    """How to load the model and size its batch and cache."""

    model_path: Path
    n_ctx: int = DEFAULT_N_CTX  # per sequence
    n_threads: int = os.cpu_count() or 1
    n_gpu_layers: int | None = None  # None: all layers when the build can offload, else 0
    parallel: int = DEFAULT_PARALLEL  # sequences decoded together
    kv_tokens: int | None = None  # KV cells for all sequences; None: parallel * n_ctx
    chunk: int = DEFAULT_CHUNK  # prompt tokens evaluated per decode step
    cache_seqs: int | None = None  # sequence ids (running + cached); None: 4 * parallel
    prompt_cache: bool = True  # reuse cached prefixes (False: for comparisons)
    flash_attn: bool | None = None  # None: llama.cpp's choice on a GPU, off on the CPU
    deterministic: bool = True  # outputs independent of the batch (llama_ubatch.py)


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise BackendUnavailable(
            "llama-cpp-python is not installed (pip install 'flowctl[llm]')") from None
    llama_cpu.apply()
    from llama_cpp import _logger

    _logger.set_verbose(False)  # llama.cpp's info and debug lines: errors only
    return llama_cpp


def gpu_offload_available() -> bool:
    """True when this llama.cpp build can put layers on a GPU (CUDA, Metal, ...)."""
    return bool(_llama_cpp().llama_supports_gpu_offload())


class LlamaBackend:
    """One model, one multi-sequence generation context and (on demand) an embedding context."""

    def __init__(self, settings: LlamaSettings):
        lib = _llama_cpp()
        if not settings.model_path.is_file():
            raise BackendUnavailable(f"model file {str(settings.model_path)!r} does not exist "
                                     "(run `just llm-model`, or set MODELS_DIR)")
        layers = settings.n_gpu_layers
        self.deterministic = settings.deterministic
        if self.deterministic:
            # llama.cpp reads it once, at its first K-quant product: process-wide from here on.
            os.environ["GGML_CPU_TILED_MM"] = "0"
        if layers is None:
            layers = -1 if lib.llama_supports_gpu_offload() else 0
        self.settings = settings
        self.n_gpu_layers = layers
        self._lib = lib
        lib.llama_backend_init()
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = layers
        if hasattr(mparams, "use_extra_bufts"):
            mparams.use_extra_bufts = (llama_cpu.extra_buffer_types_wanted()
                                       and not self.deterministic)
        self._model = lib.llama_model_load_from_file(str(settings.model_path).encode(), mparams)
        if not self._model:
            raise BackendUnavailable(f"cannot load {str(settings.model_path)!r}")
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        self.adds_bos = bool(lib.llama_vocab_get_add_bos(self._vocab))
        self.parallel = settings.parallel
        self.n_ctx = settings.n_ctx
        self.kv_tokens = max(settings.kv_tokens or settings.parallel * settings.n_ctx, settings.n_ctx)
        self.chunk = settings.chunk
        self.prompt_cache = settings.prompt_cache
        self.n_seq = min(256, max(settings.cache_seqs or 4 * settings.parallel, settings.parallel))
        n_batch, n_cells = self.chunk + self.parallel, self.kv_tokens
        if self.deterministic:
            # A stream per sequence id, as many as the budget holds (at least two: a pad
            # needs a neighbour), each with a cell to spare for a pad after a full sequence.
            self.n_seq = min(256, max(2, self.parallel, min(self.n_seq, self.kv_tokens // self.n_ctx)))
            self.kv_tokens = self.n_seq * self.n_ctx
            self._stream_cells = -(-(self.n_ctx + 1) // 256) * 256  # llama.cpp pads to 256
            n_batch, n_cells = self.chunk + self.n_seq + 1, self.n_seq * self._stream_cells
        self._index: list[int] = []  # batch entry -> row llama.cpp decoded it in
        self._ctx = self._new_context(n_ctx=n_cells, n_batch=n_batch, n_seq=self.n_seq,
                                      embeddings=False, unified=not self.deterministic)
        self._mem = lib.llama_get_memory(self._ctx)
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self._embedder: Any = None
        self._embed_batch: Any = None
        ends = self.tokenize("<end_of_turn>", special=True)
        # Gemma's end of turn is an end-of-generation token already; kept in case a GGUF
        # does not mark it so.
        self._end_of_turn = ends[0] if len(ends) == 1 else None

    def _new_context(self, *, n_ctx: int, n_batch: int, n_seq: int, embeddings: bool,
                     unified: bool) -> Any:
        lib = self._lib
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.n_threads = params.n_threads_batch = self.settings.n_threads
        params.kv_unified = unified
        # llama.cpp's CPU flash attention over a unified cache took 3.8 s a token at 569
        # cached tokens here (0.23 s without): off on the CPU unless asked for. With it, a
        # sequence's attention skips the other sequences' cells, so its output does not
        # depend on where they sit in the cache (see docs/llama.md).
        flash = self.settings.flash_attn
        if flash is None:
            flash = None if self.n_gpu_layers else False
        if flash is not None:
            params.flash_attn_type = (lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash
                                      else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        params.swa_full = True
        params.embeddings = embeddings
        if embeddings:
            params.pooling_type = lib.LLAMA_POOLING_TYPE_MEAN
        ctx = lib.llama_init_from_model(self._model, params)
        if not ctx:
            raise BackendUnavailable(f"cannot create a llama.cpp context of {n_ctx} tokens "
                                     f"for {str(self.settings.model_path)!r}")
        return ctx

    def tokenize(self, text: str, *, bos: bool = False, special: bool = False) -> list[int]:
        """Token ids of `text`; `special` parses markers such as <start_of_turn>."""
        raw = text.encode()
        room = len(raw) + 2
        buf = (self._lib.llama_token * room)()
        n = self._lib.llama_tokenize(self._vocab, raw, len(raw), buf, room, bos, special)
        if n < 0:
            room = -n
            buf = (self._lib.llama_token * room)()
            n = self._lib.llama_tokenize(self._vocab, raw, len(raw), buf, room, bos, special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as nothing)."""
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    def is_end(self, token: int) -> bool:
        """True for end-of-generation tokens (<eos>, <end_of_turn>)."""
        return token == self._end_of_turn or bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    # --- generation: called from the engine's decode thread only ---

    def new_sampler(self, sampling: Sampling, history: Sequence[int]) -> Any:
        """A llama.cpp sampler chain for one sequence; `history` feeds its penalties."""
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lib.llama_sampler_chain_add
        if (sampling.repeat_penalty != 1.0 or sampling.frequency_penalty
                or sampling.presence_penalty):
            add(chain, lib.llama_sampler_init_penalties(
                self.n_vocab, PENALTY_LAST_N, sampling.repeat_penalty,
                sampling.frequency_penalty, sampling.presence_penalty))
        if sampling.temperature <= 0:
            add(chain, lib.llama_sampler_init_greedy())
        else:
            if sampling.top_k > 0:
                add(chain, lib.llama_sampler_init_top_k(sampling.top_k))
            add(chain, lib.llama_sampler_init_top_p(sampling.top_p, 1))
            add(chain, lib.llama_sampler_init_min_p(sampling.min_p, 1))
            add(chain, lib.llama_sampler_init_temp(sampling.temperature))
            seed = sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(4), "little")
            add(chain, lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        for token in history[-PENALTY_LAST_N:]:
            lib.llama_sampler_accept(chain, token)
        return chain

    def free_sampler(self, sampler: Any) -> None:
        """Free a chain from `new_sampler`."""
        self._lib.llama_sampler_free(sampler)

    def decode(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[int],
               logits: Sequence[bool]) -> None:
        """Evaluate one batch: token i at positions[i] of sequence seqs[i]; DecodeFailed on error.

        Deterministic mode takes one token of each of several sequences, or one sequence's
        tokens (llama_ubatch.py)."""
        entries = list(zip(tokens, positions, seqs, logits, range(len(tokens)), strict=True))
        pads: list[tuple[int, int]] = []
        if self.deterministic:
            for seq in llama_ubatch.pads(seqs, self.n_seq):
                pos = int(self._lib.llama_memory_seq_pos_max(self._mem, seq)) + 1
                pads.append((seq, pos))
                entries.append((0, pos, seq, False, -1))
            entries.sort(key=lambda e: (e[2], e[1]))  # llama.cpp splits by runs of ids
        batch = self._batch
        index = [0] * len(tokens)
        for i, (token, pos, seq, wanted, origin) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = wanted
            if origin >= 0:
                index[origin] = i
        batch.n_tokens = len(entries)
        self._index = index
        try:
            status = self._lib.llama_decode(self._ctx, batch)
        finally:
            for seq, pos in pads:
                self._lib.llama_memory_seq_rm(self._mem, seq, pos, -1)
        if status != 0:
            raise DecodeFailed(f"llama_decode returned {status} for a batch of {len(entries)} tokens")

    def sample(self, sampler: Any, index: int) -> int:
        """Sample (and accept) the next token from the logits of batch entry `index`."""
        return int(self._lib.llama_sampler_sample(sampler, self._ctx, self._index[index]))

    def forget(self, seq: int, start: int) -> bool:
        """Drop sequence `seq`'s cache from position `start` on; False if it cannot (then
        the whole sequence is dropped)."""
        if self._lib.llama_memory_seq_rm(self._mem, seq, start, -1):
            return True
        self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
        return False

    # --- embeddings ---

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Mean-pooled, L2-normalized vectors and the token count; inputs are truncated to the
        embedding context; several inputs go in each decode."""
        lib = self._lib
        if self._embedder is None:
            size = min(self.n_ctx, EMBED_CTX)
            self._embedder = self._new_context(n_ctx=size, n_batch=size, n_seq=EMBED_SEQS,
                                               embeddings=True, unified=True)
            self._embed_batch = lib.llama_batch_init(size, 0, 1)
        size = lib.llama_n_batch(self._embedder)
        inputs = [self.tokenize(t, bos=self.adds_bos)[:size] for t in texts]
        vectors: list[list[float]] = []
        n_embd = lib.llama_model_n_embd(self._model)
        start = 0
        while start < len(inputs):
            group, used = [], 0
            for tokens in inputs[start:]:
                if len(group) == EMBED_SEQS or (group and used + len(tokens) > size):
                    break
                group.append(tokens)
                used += len(tokens)
            batch, i = self._embed_batch, 0
            for seq, tokens in enumerate(group):
                for pos, token in enumerate(tokens):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
                    batch.seq_id[i][0], batch.logits[i] = seq, True
                    i += 1
            batch.n_tokens = i
            lib.llama_memory_clear(lib.llama_get_memory(self._embedder), True)
            if lib.llama_decode(self._embedder, batch) != 0:
                raise DecodeFailed(f"llama_decode failed on {len(group)} embedding inputs")
            for seq in range(len(group)):
                raw = lib.llama_get_embeddings_seq(self._embedder, seq)
                vector = [float(raw[k]) for k in range(n_embd)]
                norm = math.sqrt(sum(v * v for v in vector)) or 1.0
                vectors.append([v / norm for v in vector])
            start += len(group)
        return vectors, sum(len(t) for t in inputs)

    def close(self) -> None:
        """Free the contexts, the batches and the model."""
        lib = self._lib
        for batch in (self._batch, self._embed_batch):
            if batch is not None:
                lib.llama_batch_free(batch)
        self._batch = self._embed_batch = None
        for ctx in (self._embedder, self._ctx):
            if ctx:
                lib.llama_free(ctx)
        self._embedder = self._ctx = None
        if self._model:
            lib.llama_model_free(self._model)
            self._model = None
