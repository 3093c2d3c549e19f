"""Jobs on worker processes (vitbench.flows.parallel): dependencies pass results on, a failure skips
its dependants but not the others and leaves its traceback in the job's log, progress is read from the
job's metrics file, and a graph that names an unknown dependency is refused before anything starts."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from vitbench.flows.parallel import Job, JobStatus, last_iteration, run_jobs


def write_steps(metrics: str, steps: int, value: int) -> tuple[int, int]:
    """Write ``steps`` metrics lines slowly, print a line; return (value, this process's id)."""
    print(f"writing {steps} steps")
    with open(metrics, "a", encoding="utf-8") as fh:
        for i in range(1, steps + 1):
            fh.write(json.dumps({"iteration": i, "type": "train", "value": value}) + "\n")
            fh.flush()
            time.sleep(0.3)
    return value, os.getpid()


def add_one(value: int) -> int:
    return value + 1


def fail(message: str) -> None:
    raise ValueError(message)


def _const(*args: Any) -> Any:
    return lambda _results: args


def test_dependencies_failures_and_progress(tmp_path: Path) -> None:
    metrics = tmp_path / "a" / "metrics.jsonl"
    metrics.parent.mkdir()
    jobs = [
        Job(
            "a",
            write_steps,
            _const(str(metrics), 5, 41),
            tmp_path / "logs" / "a.log",
            metrics=metrics,
            total=5,
        ),
        Job("bad", fail, _const("no such data folder"), tmp_path / "logs" / "bad.log"),
        Job("b", add_one, lambda r: (r["a"][0],), tmp_path / "logs" / "b.log", after=("a",)),
        Job("after-bad", add_one, lambda r: (0,), tmp_path / "logs" / "c.log", after=("bad",)),
    ]
    seen: list[tuple[str, str, int]] = []

    def on_update(st: JobStatus) -> None:
        seen.append((st.name, st.state, st.done))

    status = run_jobs(jobs, workers=2, on_update=on_update, poll_s=0.1)
    assert status["a"].state == "done" and status["a"].result[0] == 41
    assert status["a"].result[1] != os.getpid(), "jobs run in worker processes"
    assert status["b"].state == "done" and status["b"].result == 42
    assert status["bad"].state == "failed" and status["bad"].error == "ValueError: no such data folder"
    assert status["after-bad"].state == "skipped" and status["after-bad"].error == "bad did not finish"
    progress = [done for name, state, done in seen if name == "a" and state == "running"]
    assert progress == sorted(progress) and 0 < max(progress) <= 5, progress
    assert (tmp_path / "logs" / "a.log").read_text().strip() == "writing 5 steps"
    log = (tmp_path / "logs" / "bad.log").read_text()
    assert "Traceback" in log and "ValueError: no such data folder" in log


def test_ready_jobs_start_in_list_order_on_one_worker(tmp_path: Path) -> None:
    order = tmp_path / "order.jsonl"
    jobs = [
        Job(name, write_steps, _const(str(order), 1, i), tmp_path / f"{name}.log")
        for i, name in enumerate(["first", "second", "third"])
    ]
    run_jobs(jobs, workers=1, poll_s=0.05)
    # one worker: each job starts after the previous one finished, in the order listed
    assert [json.loads(line)["value"] for line in order.read_text().splitlines()] == [0, 1, 2]


def test_an_unknown_or_later_dependency_is_refused(tmp_path: Path) -> None:
    def const(_r: Mapping[str, Any]) -> tuple[Any, ...]:
        return (1,)

    with pytest.raises(ValueError, match="'b' depends on \\['nope'\\]"):
        run_jobs(
            [
                Job("a", add_one, const, tmp_path / "a.log"),
                Job("b", add_one, const, tmp_path / "b.log", after=("nope",)),
            ],
            workers=1,
        )
    with pytest.raises(ValueError, match="unique"):
        run_jobs([Job("a", add_one, const, tmp_path / "a.log")] * 2, workers=1)


def test_last_iteration_reads_the_tail(tmp_path: Path) -> None:
    metrics = tmp_path / "m.jsonl"
    assert last_iteration(metrics) == 0  # not written yet
    lines = [json.dumps({"iteration": i, "type": "train", "pad": "x" * 50}) for i in range(1, 400)]
    metrics.write_text("\n".join(lines) + '\n{"iteration": 7, "type": "eval"}\n{"half')
    assert last_iteration(metrics) == 399
