"""A lean inference process pool answering on the event loop without helper threads.

``concurrent.futures.ProcessPoolExecutor`` routes every call through a feeder thread, a queue
and a management thread before the result reaches the loop: about a millisecond per round
trip, most of a tick-to-trade budget. Here each worker process owns one duplex pipe; the loop
writes a request to an idle worker's pipe and learns of the answer through ``add_reader`` on
that pipe, so a round trip costs two pipe writes and two wake-ups.

Workers are started with ``spawn`` (never a fork of a running event loop), load every model
once, and serve one request at a time; requests wait for a free worker in arrival order. A
worker that dies fails its request with ``WorkerLost`` and is replaced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import signal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from gal_friday.prediction import worker
from gal_friday.prediction.model import ModelError

log = logging.getLogger(__name__)
Rows = list[tuple[str, list[float]]]


class WorkerLost(RuntimeError):
    """An inference worker exited while answering."""


def _serve(conn: Connection, model_dirs: list[str]) -> None:
    """Worker process main loop: load the models, then answer until told to stop. A model
    that cannot be loaded is reported to the parent (which says so once), not raised here.
    Ctrl-C and SIGTERM reach the whole process group; the worker leaves them to the parent,
    which stops it in order (a worker dying first would be replaced during the shutdown).
    If the parent dies (even while the worker is still loading), the broken pipe ends the
    worker quietly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError, EOFError):  # the parent is gone: so is its work
        _answer(conn, model_dirs)


def _answer(conn: Connection, model_dirs: list[str]) -> None:
    try:
        worker.init_worker(model_dirs)
    except ModelError as exc:
        conn.send(("refused", str(exc)))
        return
    conn.send(("ready", worker.loaded_models()))
    while True:
        try:
            message = conn.recv()
        except KeyboardInterrupt:
            return
        if message is None:
            return
        conn.send(("ok", worker.predict_rows(message)))


class _Worker:
    def __init__(self, ctx: Any, model_dirs: list[str]) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process: BaseProcess = ctx.Process(
            target=_serve, args=(child, model_dirs), daemon=True, name="gal-friday-inference"
        )
        self.process.start()
        child.close()
        self.future: asyncio.Future[tuple[list[float], int]] | None = None


class InferencePool:
    """``await pool.predict(rows)`` -> (probabilities, inference ns), off the event loop."""

    def __init__(self, model_dirs: list[str], workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("the inference pool needs at least one worker")
        self.model_dirs = model_dirs
        self.size = workers
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._idle: collections.deque[_Worker] = collections.deque()
        self._waiting: collections.deque[asyncio.Future[_Worker]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._processes: list[BaseProcess] = []  # every process started, for stop()
        self._replacing: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Start the workers and wait until each has loaded the models."""
        self._loop = asyncio.get_running_loop()
        await asyncio.gather(*(self._start_worker() for _ in range(self.size)))

    async def _start_worker(self) -> None:
        w = _Worker(self._ctx, self.model_dirs)
        self._processes.append(w.process)
        assert self._loop is not None
        refused = await self._loop.run_in_executor(None, self._await_ready, w)
        if refused is not None:
            w.process.join(5)
            raise ModelError(refused or self._died_loading(w))
        self._workers.append(w)
        self._loop.add_reader(w.conn.fileno(), self._on_readable, w)
        self._release(w)

    @staticmethod
    def _await_ready(w: _Worker) -> str | None:
        """None once the worker has loaded the models; else why not ("" if it died)."""
        try:
            if not w.conn.poll(120):
                return ""
            kind, detail = w.conn.recv()
        except (EOFError, OSError):
            return ""
        return None if kind == "ready" else str(detail)

    def _died_loading(self, w: _Worker) -> str:
        return (
            f"an inference worker died loading the models {', '.join(self.model_dirs)} "
            f"(exit code {w.process.exitcode}); check their files or retrain with "
            "'gal-friday train'"
        )

    async def predict(self, rows: Rows) -> tuple[list[float], int]:
        w = self._idle.popleft() if self._idle else await self._wait_for_worker()
        assert self._loop is not None
        w.future = self._loop.create_future()
        try:
            w.conn.send(rows)
        except OSError:
            self._lost(w)
            raise WorkerLost("an inference worker is gone") from None
        return await w.future

    async def _wait_for_worker(self) -> _Worker:
        assert self._loop is not None
        waiter: asyncio.Future[_Worker] = self._loop.create_future()
        self._waiting.append(waiter)
        return await waiter

    def _release(self, w: _Worker) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(w)
                return
        self._idle.append(w)

    def _on_readable(self, w: _Worker) -> None:
        try:
            kind, result = w.conn.recv()
        except (EOFError, OSError):
            self._lost(w)
            return
        future, w.future = w.future, None
        if future is not None and not future.done() and kind == "ok":
            future.set_result(result)
        self._release(w)

    def _lost(self, w: _Worker) -> None:
        """Fail the worker's request, drop it and start a replacement."""
        log.error(
            "inference worker exited; starting a new one", extra={"exitcode": w.process.exitcode}
        )
        self._forget(w)
        if w.future is not None and not w.future.done():
            w.future.set_exception(WorkerLost("an inference worker exited while answering"))
        if self._stopping:
            return
        assert self._loop is not None
        task = self._loop.create_task(self._start_worker(), name="inference:replace")
        self._replacing.add(task)
        task.add_done_callback(self._replaced)

    def _replaced(self, task: asyncio.Task[None]) -> None:
        self._replacing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("inference worker not replaced: %s", task.exception())

    def _forget(self, w: _Worker) -> None:
        assert self._loop is not None
        self._loop.remove_reader(w.conn.fileno())
        if w in self._workers:
            self._workers.remove(w)
        if w in self._idle:
            self._idle.remove(w)
        w.conn.close()

    async def stop(self) -> None:
        """Ask every worker to finish, then wait for the processes (killed if they hang)."""
        self._stopping = True
        for task in list(self._replacing):
            task.cancel()
        await asyncio.gather(*self._replacing, return_exceptions=True)
        for w in list(self._workers):
            with contextlib.suppress(OSError):
                w.conn.send(None)
            self._forget(w)
        loop = asyncio.get_running_loop()
        for process in self._processes:
            await loop.run_in_executor(None, process.join, 5)
            if process.is_alive():
                process.kill()
        self._processes = []
