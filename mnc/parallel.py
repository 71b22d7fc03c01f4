"""How mnc uses the machine's two cores: one BLAS thread, no transparent huge pages, the reference
computed in forked processes beside the backend, and single-threaded executors splitting their
samples across a fork."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import platform
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits


def numpy_settings(function):
    """Run with numpy's BLAS on one thread and without transparent huge pages. mnc overlaps its own
    stages (the reference runs beside the backend); idle OpenBLAS threads spin meanwhile and take the
    other core (seen: 4.7 CPU-seconds for a 3.0 s compile, 2.8 for 2.7 s on one thread). numpy asks
    for huge pages for every array of 4 MiB or more; where the kernel grants them on request (THP
    "madvise" with direct compaction, as on the machines mnc is built on) each fresh or copied-on-write
    page after a fork can cost a 2 MiB clear or copy: a Core ML compile of MobileNetV2 spent 2 of its
    4 s in the kernel that way, 1 s with them off."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"), _without_huge_pages():
            return function(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def _without_huge_pages():
    # numpy's switch (also NUMPY_MADVISE_HUGEPAGE=0): numpy._core.multiarray from numpy 2, numpy.core
    # before; a numpy without it has nothing to switch
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    switch = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if switch is None:
        yield
        return
    before = switch(False)
    try:
        yield
    finally:
        switch(before)


def child_environment() -> dict[str, str]:
    """The environment of a child `python -m mnc…`: this mnc first on its path, wherever it was imported
    from (an installed package, a checkout, a script that put it on sys.path)."""
    here = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    # numpy without huge pages there too (numpy_settings says why), unless the user chose
    return {
        "NUMPY_MADVISE_HUGEPAGE": "0",
        **os.environ,
        "PYTHONPATH": here + (os.pathsep + path if path else ""),
    }


_fork_allowed = True


def never_fork() -> None:
    """For a process whose other threads may hold locks at any moment (a Dask worker): a forked
    child could inherit one held and wait forever, so this process computes beside itself in threads."""
    global _fork_allowed
    _fork_allowed = False


def can_fork() -> bool:
    """Fork only where it is safe and pays: on Linux, in a process that has not started ONNX
    Runtime (whose runtime state a child must not inherit) — a fresh `mnc compile`, not a
    long-lived process that has compiled before."""
    return _fork_allowed and platform.system() == "Linux" and "onnxruntime" not in sys.modules


def default_jobs() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _worker_init() -> None:
    """A worker leaves Ctrl-C to the parent (no traceback of its own) and dies on SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Stop(BaseException):
    """SIGTERM in a worker whose task cleans up after itself (process_pool(cleanup=True))."""


_task_running = False


def _stop(signum, frame):
    if _task_running:
        raise Stop()
    os._exit(143)  # between tasks: nothing of ours to clean up, and no traceback from the pool's loop


def _stop_again(unraisable) -> None:
    """A Stop that lands in a finalizer or __del__ is printed and swallowed by Python (seen: in
    multiprocessing's close_fds while a forked child was reaped), and the task would go on building
    after its parent had left. Raise it again a moment later, where the task can unwind."""
    if isinstance(unraisable.exc_value, Stop):
        signal.signal(signal.SIGALRM, _stop)
        signal.setitimer(signal.ITIMER_REAL, 0.001)
    else:
        sys.__unraisablehook__(unraisable)


def _cleanup_worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    sys.unraisablehook = _stop_again


@contextlib.contextmanager
def exit_when_stopped():
    """Around a task of a process_pool(cleanup=True): on SIGTERM the task unwinds (its `finally`
    blocks remove what it staged, its own workers are ended), then the worker leaves at once; it
    must not go back to a queue whose other end is gone."""
    global _task_running
    _task_running = True
    try:
        yield
    except Stop:
        os._exit(143)
    finally:
        _task_running = False


@contextlib.contextmanager
def process_pool(method: str = "fork", workers: int = 1, cleanup: bool = False):
    """Worker processes; if the caller is interrupted, the workers are ended, not waited for. With
    cleanup, each worker's task gets the chance to clean up first (see exit_when_stopped)."""
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_cleanup_worker_init if cleanup else _worker_init,
    )
    try:
        yield pool
    except BaseException:
        processes = list(getattr(pool, "_processes", {}).values())
        for process in processes:
            process.terminate()
        for process in processes:  # gone before the caller cleans up after them
            process.join(timeout=10)
        manager = getattr(pool, "_executor_manager_thread", None)
        pool.shutdown(wait=False, cancel_futures=True)
        # Its manager thread closes the pool's wake-up pipe as it sees the workers gone; at exit Python
        # writes to that pipe, and if the two meet, prints "Exception ignored … Bad file descriptor".
        if manager is not None:
            manager.join(timeout=10)
        raise
    pool.shutdown(wait=True)


@contextlib.contextmanager
def background_pool():
    """Where work runs beside the main thread's: forked processes, one per core (no GIL shared, and
    the main thread's own work is mostly waiting for a runtime or a file), where possible; else a
    thread."""
    if can_fork():
        workers = default_jobs()
        with process_pool("fork", workers=workers) as pool:
            pool.workers = workers
            yield pool
    else:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.workers = 1
            yield pool


def background_workers(pool) -> int:
    """How many tasks a background_pool runs at once (1: any other pool)."""
    return getattr(pool, "workers", 1)


_inherited: Callable | None = None


def _run_inherited(part):
    return _inherited(part)


def on_two_cores(work: Callable, first, second) -> tuple:
    """(work(first), work(second)), the first in a forked process where forking is allowed. The
    child inherits `work` and all it reads: only the parts and the results are sent between the two."""
    global _inherited
    if not can_fork():
        return work(first), work(second)
    _inherited = work  # set before the pool forks its worker (at the first submit)
    try:
        with process_pool("fork") as pool:
            head = pool.submit(_run_inherited, first)
            rest = work(second)
            return head.result(), rest
    finally:
        _inherited = None


def run_split(run: Callable, artifact, feed: dict[str, np.ndarray], split: bool) -> list[np.ndarray]:
    """run(artifact, feed); with split (a single-threaded executor), half the samples go to a
    forked process so both cores work."""
    ((name, batch),) = feed.items()
    if not split or len(batch) < 2 or not can_fork():
        return run(artifact, feed)
    half = len(batch) // 2
    with process_pool("fork") as pool:
        first = pool.submit(run, artifact, {name: batch[:half]})
        rest = run(artifact, {name: batch[half:]})
        head = first.result()
    return [np.concatenate([h, r]) for h, r in zip(head, rest)]
