"""The service benchmark's lean HTTP client reads whole answers over keep-alive connections, reconnects
when the server closes, reads stage timings from ``Server-Timing`` and counts what it could not read."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from service_throughput import Bare, Connection, describe_paired, drive, paired, server_timing  # noqa: E402

BODY = json.dumps(
    {"detections": [{"label": 1, "label_name": "circle"}, {"label": 2, "label_name": "square"}]}
).encode()


async def _serve(close_every: int, seen: list[tuple[str, bytes]]) -> tuple[asyncio.Server, int]:
    """A loopback HTTP/1.1 server answering every POST with ``BODY``; every ``close_every``-th answer on
    a connection says ``Connection: close`` and closes it. Records (request line, body) in ``seen``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next(
                    int(v) for k, _, v in (h.partition(":") for h in lines) if k.lower() == "content-length"
                )
                seen.append((lines[0], await reader.readexactly(length)))
                answered += 1
                closing = answered % close_every == 0
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"server-timing: decode;dur=1.5, inference;dur=20, total;dur=22.25\r\n"
                    + (b"connection: close\r\n" if closing else b"")
                    + f"content-length: {len(BODY)}\r\n\r\n".encode()
                    + BODY
                )
                await writer.drain()
                if closing:
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_connection_reads_whole_answers_and_reconnects_after_close() -> None:
    async def scenario() -> list[tuple[int, dict[str, str], bytes]]:
        seen: list[tuple[str, bytes]] = []
        server, port = await _serve(close_every=2, seen=seen)
        async with server:
            conn = Connection("127.0.0.1", port)
            request = conn.request("/detect?mask_format=rle", b"\xff\xd8jpeg", "image/jpeg")
            answers = [await conn.send(request) for _ in range(5)]
            await conn.close()
        assert seen == [("POST /detect?mask_format=rle HTTP/1.1", b"\xff\xd8jpeg")] * 5
        return answers

    answers = asyncio.run(scenario())
    assert [status for status, _, _ in answers] == [200] * 5
    assert all(body == BODY for _, _, body in answers)  # the whole body, also across reconnects
    assert server_timing(answers[0][1]["server-timing"]) == {"decode": 1.5, "inference": 20.0, "total": 22.25}
    assert server_timing("") == {} and server_timing("cache;desc=hit, db;dur=3") == {"db": 3.0}


def test_drive_counts_answers_and_detections() -> None:
    async def scenario() -> tuple[list[float], dict[str, int], list[dict[str, float]]]:
        server, port = await _serve(close_every=3, seen=[])
        async with server:
            latencies, statuses, timings, _ = await drive(f"http://127.0.0.1:{port}", b"jpeg", 2, 0.3, "rle")
        return latencies, dict(statuses), timings

    latencies, statuses, timings = asyncio.run(scenario())
    assert statuses == {"200": len(latencies)} and len(latencies) > 4
    assert all(t == {"decode": 1.5, "inference": 20.0, "total": 22.25, "_n": 2.0} for t in timings)


def test_drive_counts_refused_connections_as_errors() -> None:
    async def scenario() -> dict[str, int]:
        server, port = await _serve(close_every=1, seen=[])
        server.close()
        await server.wait_closed()  # nothing listens on the port any more
        _, statuses, _, _ = await drive(f"http://127.0.0.1:{port}", b"jpeg", 1, 0.05, "rle")
        return dict(statuses)

    statuses = asyncio.run(scenario())
    assert set(statuses) == {"ConnectionRefusedError"} and statuses["ConnectionRefusedError"] >= 1


def test_bare_streams_call_the_session_from_that_many_threads_at_once() -> None:
    """The bare ×N side runs N callers at once and counts every run they made."""
    lock = threading.Lock()
    active = most = calls = 0

    class Session:
        def run(self, batch: np.ndarray) -> None:
            nonlocal active, most, calls
            with lock:
                active += 1
                most = max(most, active)
            time.sleep(0.01)
            with lock:
                active -= 1
                calls += 1

    bare = object.__new__(Bare)  # only the session is needed
    bare.stream_backend = Session()  # type: ignore[assignment]
    runs, wall, cpu = bare.run_streams(np.zeros((1, 3, 8, 8), np.float32), 0.2, 3)
    assert most == 3
    assert runs == calls >= 3 * 8  # ≈ 20 runs per thread in 0.2 s; slack for a loaded machine
    assert wall >= 0.2 and cpu >= 0.0


def test_bare_streams_run_on_the_session_the_service_gives_queued_batches(tmp_path: Path) -> None:
    """bare ×N uses a second session with the service's stream threads, or the first when the
    service opens none (``stream_intra_op_threads`` 0)."""
    sys.path.insert(0, str(ROOT / "tests" / "service"))
    from fake_detector import write_fake_model_dir

    model_dir = write_fake_model_dir(tmp_path, size=64)
    cpu = ["CPUExecutionProvider"]
    narrow = Bare(model_dir, cpu, 2, 4.0, False, stream_threads=1, streams=2)
    assert narrow.stream_threads == 1 and narrow.stream_backend is not narrow.backend
    options = narrow.stream_backend._session.get_session_options()
    assert options.intra_op_num_threads == 1
    one = Bare(model_dir, cpu, 2, 4.0, False, stream_threads=0, streams=2)
    assert one.stream_threads is None and one.stream_backend is one.backend


def test_paired_runs_the_floor_and_the_service_in_lock_step() -> None:
    """Each step: the bare session twice (one timed), one decode (timed), two requests (one timed);
    the floor is bare p50 + decode p50 and the excess is the service's p50 over it."""
    calls: list[str] = []

    def run_bare() -> None:
        calls.append("bare")
        time.sleep(0.004)

    def decode() -> None:
        calls.append("decode")
        time.sleep(0.002)

    async def scenario() -> tuple[dict[str, object], list[tuple[str, bytes]]]:
        seen: list[tuple[str, bytes]] = []
        server, port = await _serve(close_every=10**6, seen=seen)
        async with server:
            result = await paired(f"http://127.0.0.1:{port}", run_bare, decode, b"jpeg", 0.2, "none")
        return result, seen

    result, seen = asyncio.run(scenario())
    steps = result["steps"]
    assert isinstance(steps, int) and steps >= 3 and len(seen) == 2 * steps
    assert seen[0] == ("POST /detect?mask_format=none&score_threshold=0.0 HTTP/1.1", b"jpeg")
    assert calls == ["bare", "bare", "decode"] * steps  # never two requests or decodes in a row
    bare, decoded = result["bare_p50_ms"], result["decode_p50_ms"]
    assert isinstance(bare, float) and isinstance(decoded, float)
    assert 4.0 <= bare < 40.0 and 2.0 <= decoded < 20.0
    assert result["floor_p50_ms"] == pytest.approx(bare + decoded, abs=0.011)  # each rounded to 0.01
    service = result["service_p50_ms"]
    assert isinstance(service, float)
    # excess_pct is computed before rounding: the rounded figures give it to within their rounding
    assert result["excess_pct"] == pytest.approx((service / (bare + decoded) - 1) * 100, abs=0.5)
    assert service < bare + decoded  # the fake answers at once: under the 6 ms floor
    assert isinstance(result["pair_excess_pct"], float) and result["pair_excess_pct"] < 0
    assert f"{steps} steps" in describe_paired(result)


def test_paired_refuses_an_error_answer() -> None:
    async def scenario() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
            except asyncio.IncompleteReadError:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await paired(f"http://127.0.0.1:{port}", lambda: None, lambda: None, b"jpeg", 0.05, "rle")

    with pytest.raises(RuntimeError, match="answered 503, "):
        asyncio.run(scenario())
