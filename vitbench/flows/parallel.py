"""Run a small graph of jobs (pre-trainings, fine-tunings) on a few worker processes.

Each job is a picklable top-level function run in a fresh spawned process (``max_tasks_per_child=1``:
no torch, MLflow or signal state leaks from one job into the next) with ``threads`` torch threads and
its stdout / stderr in its own log file. A job starts once every job it depends on has succeeded (its
arguments can then be built from their results); it is skipped when one of them failed. Among the jobs
that are ready, the one listed first starts first, so list the longest chains first.

Progress is read from the metrics file each job's engine writes (JSON lines with ``iteration``), so the
workers need no channel back to the parent; ``on_update`` is called from the parent's thread only.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

State = Literal["waiting", "running", "done", "failed", "skipped"]


@dataclass(frozen=True)
class Job:
    """One unit of work: ``fn(*make_args(results_of_dependencies))`` in a worker process.

    ``total`` is the number of iterations the job's engine will run (for progress); ``metrics`` is the
    JSON-lines file it writes them to; ``log`` receives the job's stdout and stderr.
    """

    name: str
    fn: Callable[..., Any]
    make_args: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    log: Path
    after: tuple[str, ...] = ()
    metrics: Path | None = None
    total: int = 0


@dataclass
class JobStatus:
    """Where a job stands: state, iterations done of ``total``, result or error, wall seconds."""

    name: str
    total: int
    state: State = "waiting"
    done: int = 0
    result: Any = None
    error: str = ""
    wall_s: float = 0.0
    started: float = field(default=0.0, repr=False)


class JobFailedError(RuntimeError):
    """Raised in the worker to report a job's failure without a traceback in the summary."""


def last_iteration(metrics: Path) -> int:
    """The highest ``iteration`` among the last lines of a JSON-lines metrics file (0 if none yet)."""
    try:
        with metrics.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            tail = fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    best = 0
    for line in tail[1:] if len(tail) > 1 else tail:  # the first line of the window may be cut
        try:
            best = max(best, int(json.loads(line).get("iteration", 0)))
        except (ValueError, AttributeError):
            continue
    return best


def _in_worker(fn: Callable[..., Any], args: tuple[Any, ...], threads: int, log: Path) -> Any:
    """Run ``fn(*args)`` with ``threads`` torch threads and stdout/stderr appended to ``log``."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # torch reads it when the job imports it
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab", buffering=0) as fh:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            return fn(*args)
        except JobFailedError:
            raise
        except BaseException as exc:  # the parent gets one line; the log gets the traceback
            traceback.print_exc()
            sys.stderr.flush()
            raise JobFailedError(f"{type(exc).__name__}: {exc}".strip()) from None


def run_jobs(
    jobs: Sequence[Job],
    *,
    workers: int,
    threads: int = 1,
    on_update: Callable[[JobStatus], None] | None = None,
    poll_s: float = 1.0,
) -> dict[str, JobStatus]:
    """Run ``jobs`` on ``workers`` processes; returns every job's final :class:`JobStatus` by name.

    Raises ``ValueError`` for a dependency that names no earlier job (the graph is checked before
    anything starts). A failing job does not stop the others; those that depend on it are skipped.
    """
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {names}")
    for i, j in enumerate(jobs):
        unknown = [d for d in j.after if d not in names[:i]]
        if unknown:
            raise ValueError(f"job {j.name!r} depends on {unknown}, which are not listed before it")
    status = {j.name: JobStatus(j.name, j.total) for j in jobs}
    notify = on_update or (lambda _s: None)
    for s in status.values():
        notify(s)
    by_future: dict[Future[Any], Job] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx, max_tasks_per_child=1) as pool:
        while True:
            for j in jobs:  # skip what can no longer run, start what is ready, in list order
                st = status[j.name]
                if st.state != "waiting":
                    continue
                failed = [d for d in j.after if status[d].state in ("failed", "skipped")]
                if failed:
                    st.state, st.error = "skipped", f"{failed[0]} did not finish"
                    notify(st)
                elif all(status[d].state == "done" for d in j.after) and len(by_future) < workers:
                    args = j.make_args({d: status[d].result for d in j.after})
                    by_future[pool.submit(_in_worker, j.fn, args, threads, j.log)] = j
                    st.state, st.started = "running", time.perf_counter()
                    notify(st)
            if not by_future:
                break
            finished, _ = wait(list(by_future), timeout=poll_s, return_when=FIRST_COMPLETED)
            for fut in finished:
                j = by_future.pop(fut)
                st = status[j.name]
                st.wall_s = time.perf_counter() - st.started
                try:
                    st.result, st.state = fut.result(), "done"
                    st.done = st.total
                except JobFailedError as exc:
                    st.state, st.error = "failed", str(exc)
                except BrokenProcessPool as exc:  # the worker died (killed, out of memory)
                    raise RuntimeError(f"the process of job {j.name!r} died: {exc}; see {j.log}") from exc
                notify(st)
            for j in by_future.values():  # progress of those still running
                if j.metrics is not None:
                    st = status[j.name]
                    done = min(last_iteration(j.metrics), j.total or sys.maxsize)
                    if done != st.done:
                        st.done = done
                        notify(st)
    return status
