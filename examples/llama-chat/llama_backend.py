"""The real model: llama-cpp-python's `Llama`, loaded from a GGUF file, behind the engine's Backend.

Every method here blocks (C calls that release the GIL) and runs in a worker thread.
Embeddings use a second `Llama` on the same file, created on first use: a context built
for embeddings does not produce usable logits for generation, and the weights are
memory-mapped, so the twin costs only its own context.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpu
from llama_engine import Sampling

DEFAULT_N_CTX = 4096


class BackendUnavailable(Exception):
    """llama-cpp-python is missing or the model file cannot be loaded."""


@dataclass(frozen=True)
class LlamaSettings:
    """How to load the model."""

    model_path: Path
    n_ctx: int = DEFAULT_N_CTX
    n_threads: int = os.cpu_count() or 1
    n_gpu_layers: int | None = None  # None: all layers when the build can offload, else 0


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise BackendUnavailable(
            "llama-cpp-python is not installed (pip install 'flowctl[llm]')") from None
    llama_cpu.apply()
    return llama_cpp


def gpu_offload_available() -> bool:
    """True when this llama.cpp build can put layers on a GPU (CUDA, Metal, ...)."""
    return bool(_llama_cpp().llama_supports_gpu_offload())


class LlamaBackend:
    """One generation context (and, on demand, one embedding context) over a GGUF file."""

    def __init__(self, settings: LlamaSettings):
        llama_cpp = _llama_cpp()
        if not settings.model_path.is_file():
            raise BackendUnavailable(f"model file {str(settings.model_path)!r} does not exist "
                                     "(run `just llm-model`, or set MODELS_DIR)")
        layers = settings.n_gpu_layers
        if layers is None:
            layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        self.settings = settings
        self.n_gpu_layers = layers
        self._lib = llama_cpp
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(settings.model_path), n_ctx=settings.n_ctx,
                n_threads=settings.n_threads, n_threads_batch=settings.n_threads,
                n_gpu_layers=layers, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise BackendUnavailable(f"cannot load {str(settings.model_path)!r}: {exc}") from None
        self.n_ctx = self.llm.n_ctx()
        self._vocab = self.llm._model.vocab
        self._embedder = None
        ends = self.llm.tokenize(b"<end_of_turn>", add_bos=False, special=True)
        # Gemma's end of turn is an end-of-generation token already; kept in case a GGUF
        # does not mark it so.
        self._end_of_turn = ends[0] if len(ends) == 1 else None

    def tokenize(self, text: str, *, bos: bool = False, special: bool = False) -> list[int]:
        """Token ids of `text`; `special` parses markers such as <start_of_turn>."""
        return self.llm.tokenize(text.encode(), add_bos=bos, special=special)

    @property
    def adds_bos(self) -> bool:
        """Whether prompts of this model start with a BOS token."""
        return bool(self.llm._model.add_bos_token())

    def generate(self, tokens: Sequence[int], sampling: Sampling) -> Iterator[int]:
        """Sampled token ids after `tokens`, without end (the caller stops it)."""
        if sampling.seed is not None:
            self.llm.set_seed(sampling.seed & 0xFFFFFFFF)
        else:
            self.llm.set_seed(int.from_bytes(os.urandom(4), "little"))
        return self.llm.generate(
            tokens, top_k=sampling.top_k, top_p=sampling.top_p, min_p=sampling.min_p,
            temp=sampling.temperature, repeat_penalty=sampling.repeat_penalty,
            frequency_penalty=sampling.frequency_penalty,
            presence_penalty=sampling.presence_penalty)

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as nothing)."""
        return self.llm.detokenize([token])

    def is_end(self, token: int) -> bool:
        """True for end-of-generation tokens (<eos>, <end_of_turn>)."""
        return token == self._end_of_turn or bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Mean-pooled, L2-normalized vectors and the token count; inputs are truncated to the
        context window."""
        if self._embedder is None:
            size = min(self.n_ctx, 2048)
            self._embedder = self._lib.Llama(
                model_path=str(self.settings.model_path), embedding=True,
                pooling_type=self._lib.LLAMA_POOLING_TYPE_MEAN, n_ctx=size, n_batch=size,
                n_ubatch=size, n_threads=self.settings.n_threads,
                n_threads_batch=self.settings.n_threads, n_gpu_layers=self.n_gpu_layers,
                verbose=False)
        vectors, count = self._embedder.embed(texts, normalize=True, truncate=True,
                                              return_count=True)
        return vectors, count

    def close(self) -> None:
        """Free the contexts and the model."""
        for llm in (self._embedder, self.llm):
            if llm is not None:
                llm.close()
