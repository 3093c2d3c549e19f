"""The dynamic batcher, the body limit middleware, and overload behaviour through the app."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_helpers import image_bytes, settings_for

from vitbench.service.app import create_app
from vitbench.service.backends import RawDetections
from vitbench.service.batching import DynamicBatcher, QueueFullError, RequestTimeoutError
from vitbench.service.middleware import BodyLimitMiddleware
from vitbench.service.model_source import ModelArtifact
from vitbench.service.settings import ServiceSettings


def _run(coro_fn: Callable[[], object]) -> object:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


def test_concurrent_requests_are_batched_in_order() -> None:
    seen: list[list[int]] = []

    def run_batch(items: list[int]) -> list[int]:
        seen.append(list(items))
        time.sleep(0.02)
        return [i * 10 for i in items]

    async def scenario() -> list[object]:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(run_batch, 4, max_delay_s=0.05, queue_size=32)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i, 5.0) for i in range(10)))
        await batcher.close()
        return list(results)

    results = _run(scenario)
    assert [r.output for r in results] == [i * 10 for i in range(10)]  # type: ignore[attr-defined]
    assert [len(b) for b in seen] == [4, 4, 2]
    assert sorted(x for b in seen for x in b) == list(range(10))
    assert all(r.batch_size == len(seen[i // 4]) for i, r in enumerate(results))  # type: ignore[attr-defined]


def test_batch_size_one_runs_one_at_a_time() -> None:
    sizes: list[int] = []

    async def scenario() -> None:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            lambda items: items, 1, max_delay_s=0.05, queue_size=8, on_batch=lambda n, s: sizes.append(n)
        )
        await batcher.start()
        await asyncio.gather(*(batcher.submit(i, 5.0) for i in range(5)))
        await batcher.close()

    _run(scenario)
    assert sizes == [1, 1, 1, 1, 1]


def test_full_queue_and_timeout() -> None:
    gate = threading.Event()
    ran: list[list[int]] = []

    def run_batch(items: list[int]) -> list[int]:
        ran.append(list(items))
        gate.wait(5)
        return items

    async def scenario() -> None:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(run_batch, 1, max_delay_s=0.0, queue_size=2)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(0, 5.0))
        await asyncio.sleep(0.05)  # the worker holds item 0
        waiting = [asyncio.create_task(batcher.submit(i, 0.1)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            await batcher.submit(3, 5.0)
        for task in waiting:
            with pytest.raises(RequestTimeoutError):
                await task
        gate.set()
        assert (await first).output == 0
        await asyncio.sleep(0.05)
        await batcher.close()

    _run(scenario)
    assert ran == [[0]]  # the timed-out requests were dropped, never run


def test_lone_request_runs_at_once_despite_a_long_batching_window() -> None:
    async def scenario() -> float:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            lambda items: items, 8, max_delay_s=5.0, queue_size=8
        )
        await batcher.start()
        started = time.perf_counter()
        result = await batcher.submit(1, 10.0)
        elapsed = time.perf_counter() - started
        await batcher.close()
        assert result.batch_size == 1
        return elapsed

    assert _run(scenario) < 1.0  # not the 5 s window: nothing else was on its way


def test_batcher_waits_only_for_requests_on_their_way() -> None:
    """With one more request being decoded, the first waits for it and both run in one batch."""
    seen: list[list[int]] = []
    on_their_way = 0

    def run_batch(items: list[int]) -> list[int]:
        seen.append(list(items))
        return items

    async def scenario() -> None:
        nonlocal on_their_way
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            run_batch, 8, max_delay_s=2.0, queue_size=8, incoming=lambda: on_their_way
        )
        await batcher.start()
        on_their_way = 1  # a second request is still decoding

        async def late() -> object:
            nonlocal on_their_way
            await asyncio.sleep(0.1)
            on_their_way = 0
            return await batcher.submit(2, 5.0)

        await asyncio.gather(batcher.submit(1, 5.0), late())
        await batcher.close()

    _run(scenario)
    assert seen == [[1, 2]]


def test_requests_queued_during_a_run_form_the_next_batch() -> None:
    gate = threading.Event()
    seen: list[list[int]] = []

    def run_batch(items: list[int]) -> list[int]:
        seen.append(list(items))
        if items == [0]:
            gate.wait(5)
        return items

    async def scenario() -> None:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(run_batch, 8, max_delay_s=0.0, queue_size=8)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(0, 5.0))
        await asyncio.sleep(0.05)  # item 0 runs alone, at once
        rest = [asyncio.create_task(batcher.submit(i, 5.0)) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(first, *rest)
        await batcher.close()

    _run(scenario)
    assert seen == [[0], [1, 2, 3]]


def test_errors_reach_every_request_of_the_batch() -> None:
    def run_batch(items: list[int]) -> list[int]:
        raise RuntimeError("device lost")

    async def scenario() -> None:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(run_batch, 4, max_delay_s=0.02, queue_size=8)
        await batcher.start()
        outcomes = await asyncio.gather(*(batcher.submit(i, 5.0) for i in range(3)), return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        assert (await asyncio.gather(batcher.submit(9, 0.5), return_exceptions=True))[
            0
        ].__class__ is RuntimeError
        await batcher.close()

    _run(scenario)


def test_body_limit_stops_reading_early() -> None:
    """A chunked 100 KB upload against a 4 KB limit: 413 after 5 chunks, the rest is never received."""
    received = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": received < 100}

    async def send(message: dict) -> None:
        sent.append(message)

    async def app(scope: dict, receive: object, send: object) -> None:
        raise AssertionError("the app must not be called")

    middleware = BodyLimitMiddleware(app, max_bytes=4096)  # type: ignore[arg-type]
    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", b"image/png")]}
    asyncio.run(middleware(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 413 and received == 5

    declared = {**scope, "headers": [(b"content-length", b"10000000000")]}
    received, sent[:] = 0, []
    asyncio.run(middleware(declared, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 413 and received == 0  # refused from the header alone


class _GatedBackend:
    """A backend whose runs wait for ``gate``; answers no detections."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.batches: list[int] = []

    @property
    def active_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]

    def run_batch(self, batch: list[np.ndarray]) -> list[RawDetections]:
        self.batches.append(len(batch))
        if self.batches[1:]:  # the warm-up passes at once
            self.gate.wait(10)
        empty = RawDetections(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            np.zeros((0, 28, 28)),
        )
        return [empty for _ in batch]


def _gated_app(model_dir: Path, gate: threading.Event, **overrides: object) -> tuple[object, _GatedBackend]:
    backend = _GatedBackend(gate)

    def factory(artifact: ModelArtifact, settings: ServiceSettings) -> _GatedBackend:
        return backend

    return create_app(settings_for(model_dir, **overrides), backend_factory=factory), backend


@pytest.mark.parametrize("streams", [1, 2])
def test_overload_answers_503_with_retry_after(
    make_client: Callable[..., TestClient], fake_model_dir: Path, streams: int
) -> None:
    gate = threading.Event()
    app, _ = _gated_app(
        fake_model_dir, gate, max_batch_size=1, queue_size=2, retry_after_s=3, inference_streams=streams
    )
    admitted = streams + 2  # one running per stream + two queued
    client = make_client(app)
    data = image_bytes(64, 64)

    def post() -> int:
        return client.post("/detect", content=data, headers={"content-type": "image/jpeg"}).status_code

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post) for _ in range(8)]
        deadline = time.monotonic() + 10
        while sum(f.done() for f in futures) < 8 - admitted and time.monotonic() < deadline:
            time.sleep(0.01)
        rejected = client.post("/detect", content=data, headers={"content-type": "image/jpeg"})
        gate.set()
        codes = sorted(f.result() for f in futures)
    assert rejected.status_code == 503 and rejected.headers["retry-after"] == "3"
    assert codes.count(200) == admitted and codes.count(503) == 8 - admitted  # the rest refused
    assert client.post("/detect", content=data, headers={"content-type": "image/jpeg"}).status_code == 200
    assert 'vitbench_rejected_total{reason="overloaded"}' in client.get("/metrics").text


def test_request_timeout_answers_503(make_client: Callable[..., TestClient], fake_model_dir: Path) -> None:
    gate = threading.Event()
    app, _ = _gated_app(fake_model_dir, gate, request_timeout_s=0.2)
    client = make_client(app)
    resp = client.post("/detect", content=image_bytes(64, 64), headers={"content-type": "image/jpeg"})
    gate.set()
    assert resp.status_code == 503 and "timed out" in resp.json()["detail"]
    assert "retry-after" in resp.headers


def test_run_alone_holds_the_inference_thread_and_batches_gather_meanwhile() -> None:
    gate = threading.Event()
    seen: list[tuple[str, list[int]]] = []

    def run_batch(items: list[int]) -> list[int]:
        seen.append((threading.current_thread().name, list(items)))
        return items

    def job() -> str:
        gate.wait(5)
        return threading.current_thread().name

    async def scenario() -> str:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(run_batch, 8, max_delay_s=0.0, queue_size=8)
        await batcher.start()
        assert batcher.idle
        alone = asyncio.create_task(batcher.run_alone(job, 5.0))
        await asyncio.sleep(0)  # the job is on the inference thread now
        assert not batcher.idle
        rest = [asyncio.create_task(batcher.submit(i, 5.0)) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        assert seen == []  # no batch while the job holds the thread
        gate.set()
        thread = await alone
        await asyncio.gather(*rest)
        assert batcher.idle
        await batcher.close()
        return thread

    thread = _run(scenario)
    assert seen == [(thread, [1, 2, 3])]  # what queued meanwhile ran as one batch on the same thread
    assert str(thread).startswith("inference")


def test_run_alone_times_out_and_keeps_the_thread_until_the_job_ends() -> None:
    gate = threading.Event()

    async def scenario() -> None:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(lambda items: items, 4, 0.0, queue_size=8)
        await batcher.start()
        with pytest.raises(RequestTimeoutError):
            await batcher.run_alone(lambda: gate.wait(5), 0.05)
        assert not batcher.idle  # the job still runs
        gate.set()
        assert (await batcher.submit(5, 5.0)).output == 5
        await batcher.close()

    _run(scenario)


def test_lone_requests_take_the_direct_path_and_answer_like_concurrent_ones(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    pipeline = client.app.state.service.pipeline  # type: ignore[attr-defined]
    direct_calls: list[int] = []
    detect_alone = pipeline.detect_alone

    def counted(*args: object) -> object:
        direct_calls.append(1)
        return detect_alone(*args)

    pipeline.detect_alone = counted
    run_batch = pipeline.backend.run_batch

    def slow(batch: list[np.ndarray]) -> list[RawDetections]:
        time.sleep(0.05)  # so that concurrent requests overlap
        return run_batch(batch)

    pipeline.backend.run_batch = slow
    data = image_bytes(200, 100)
    params = {"mask_format": "rle", "score_threshold": 0.0}

    def post() -> dict:
        resp = client.post("/detect", params=params, content=data, headers={"content-type": "image/jpeg"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        return {k: v for k, v in body.items() if k != "timings_ms"}

    lone = post()
    assert direct_calls == [1]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda _: post(), range(12)))
    assert len(direct_calls) <= 8  # those arriving while another ran were queued and batched
    assert lone["detections"] and all(answer == lone for answer in together)


@pytest.mark.parametrize("streams", [1, 2])
def test_streams_run_that_many_batches_at_once(streams: int) -> None:
    """Two requests that each wait for the other inside ``run_batch`` both finish only with two streams."""
    barrier = threading.Barrier(2, timeout=0.5)

    def run_batch(items: list[int]) -> list[int]:
        barrier.wait()  # raises BrokenBarrierError when the other batch cannot run at the same time
        return items

    async def scenario() -> list[object]:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(run_batch, 1, 0.0, queue_size=8, streams=streams)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i, 5.0) for i in (1, 2)), return_exceptions=True)
        await batcher.close()
        return list(results)

    results = _run(scenario)
    if streams == 2:
        assert [r.output for r in results] == [1, 2]  # type: ignore[union-attr]
    else:
        assert all(isinstance(r, threading.BrokenBarrierError) for r in results)


def test_streams_bound_the_concurrent_batches_and_later_requests_gather() -> None:
    running = 0
    most = 0
    sizes: list[int] = []
    lock = threading.Lock()

    def run_batch(items: list[int]) -> list[int]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            sizes.append(len(items))
        time.sleep(0.2)
        with lock:
            running -= 1
        return [i * 2 for i in items]

    async def scenario() -> list[object]:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(run_batch, 4, 0.0, queue_size=32, streams=3)
        await batcher.start()
        first = []
        for i in range(3):  # each starts a batch of its own on a free stream
            first.append(asyncio.create_task(batcher.submit(i, 5.0)))
            await asyncio.sleep(0.02)
        rest = [asyncio.create_task(batcher.submit(i, 5.0)) for i in range(3, 11)]
        results = await asyncio.gather(*first, *rest)
        await batcher.close()
        return list(results)

    results = _run(scenario)
    assert [r.output for r in results] == [i * 2 for i in range(11)]  # type: ignore[attr-defined]
    assert most == 3
    assert sizes[:3] == [1, 1, 1] and sizes[3:] == [4, 4]  # the rest waited for a stream and gathered


def test_close_lets_running_batches_on_every_stream_finish() -> None:
    def run_batch(items: list[int]) -> list[int]:
        time.sleep(0.1)
        return items

    async def scenario() -> list[object]:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(run_batch, 1, 0.0, queue_size=8, streams=2)
        await batcher.start()
        pending = [asyncio.create_task(batcher.submit(i, 5.0)) for i in range(4)]
        await asyncio.sleep(0.02)  # two batches run, two requests wait
        await batcher.close(drain_timeout_s=5.0)
        return list(await asyncio.gather(*pending))

    assert [r.output for r in _run(scenario)] == [0, 1, 2, 3]  # type: ignore[attr-defined]


def test_a_second_stream_serves_a_request_while_run_alone_holds_the_first() -> None:
    gate = threading.Event()

    async def scenario() -> None:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            lambda items: items, 4, 0.0, queue_size=8, streams=2
        )
        await batcher.start()
        alone = asyncio.create_task(batcher.run_alone(lambda: gate.wait(5), 5.0))
        await asyncio.sleep(0)
        assert (await batcher.submit(7, 1.0)).output == 7  # did not wait for the job
        gate.set()
        assert await alone is True
        await batcher.close()

    _run(scenario)
