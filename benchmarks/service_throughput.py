"""Service throughput against its bare model, on real photographs at camera sizes.

For each image size (default 640×480 and 1920×1080: a photograph shipped with matplotlib, resized
with Lanczos and saved as JPEG quality 90), each mask format (``rle``, ``none``) and each client
count (1, 4, 8), C clients post the photograph back to back for D seconds to one ``vitbench serve``
process (its default settings: batching, scaled JPEG decoding, stage thread pools). The *bare*
session — an ``OnnxBackend`` on the same ``model.onnx`` with the same providers, intra-op threads and
spinning setting, in this process while the server idles — runs the pre-processed photograph back
to back for D/2 seconds: its images/s is what the model alone delivers, and service ÷ bare says how
much of it the service keeps. The service runs up to ``VITBENCH_INFERENCE_STREAMS`` batches at once
(``--streams``, default the service's default), so the bare model is also run for D/2 seconds by
that many threads at once (*bare ×N*), on a session with the intra-op threads the service gives its
queued batches (``VITBENCH_STREAM_INTRA_OP_THREADS``, ``--stream-threads``; the first session when the
service opens no second one): service ÷ bare ×N says how much of the model driven the service's way
the service keeps. Each level alternates bare, bare ×N and service ``--rounds`` times
(D/2/R, D/2/R and D/R seconds each), so that all see the same load on a shared machine. Reported per level:
images/s, ratio, p50/p99 latency, per-stage p50 and the p50 of the server's own total (server
timings; p50 minus it is HTTP + the client), mean batch size, errors; and the bare inference p50 +
in-process decode p50, the floor for the service's p50 at 1 client; at 1 client the floor and the
service are also measured in lock step, request by request (``--paired-seconds``, :func:`paired`),
so that the host's drift between seconds falls on both alike. CPU milliseconds per image
(Linux: the server process's user + system time from /proc; the bare session's and the clients' from
this process's own) and the load average at the end of the level show how busy a shared machine was.

    .venv/bin/python benchmarks/service_throughput.py --export-tiny --duration 10 \\
        --json benchmarks/results/service_throughput.json

The clients run in this process and share the machine with the server: on a 2-core machine they take
part of the cores the service could use, so the ratio is a lower bound. They are lean (:class:`Connection`:
keep-alive HTTP/1.1 on asyncio streams, the request built once, stage timings from the answer's
``Server-Timing`` header) and cost about 0.5 ms of CPU per request where httpx cost about 3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostinfo import cpu_description
from load_test import add_model_source, export_tiny, free_port, percentile, start_server, stop_servers
from tables import write_json

STAGES = ("decode", "preprocess", "queue", "inference", "postprocess")


def photograph(width: int, height: int) -> bytes:
    """matplotlib's sample photograph (Grace Hopper) at ``width``×``height``, JPEG quality 90."""
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = Image.open(path).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class Bare:
    """The bare session: same model file, providers and threads as the server; pre-processed input."""

    def __init__(
        self,
        model_dir: Path,
        providers: list[str],
        threads: int,
        draft_factor: float,
        spinning: bool,
        stream_threads: int = -1,
        streams: int = 2,
    ) -> None:
        """``stream_threads`` and ``streams``: the service's settings of those names; :meth:`run_streams`
        uses a second session with the intra-op threads the service would give its queued batches."""
        from vitbench.registry.manifest import ModelManifest
        from vitbench.service.backends import OnnxBackend
        from vitbench.service.settings import ServiceSettings

        self.manifest = ModelManifest.load(model_dir / "manifest.json")
        self.size = self.manifest.input.size

        def session(intra_op_threads: int) -> OnnxBackend:
            return OnnxBackend(
                model_dir / "model.onnx",
                self.size,
                providers,
                intra_op_threads=intra_op_threads,
                intra_op_spinning=spinning,
            )

        settings = ServiceSettings(
            intra_op_threads=threads, inference_streams=streams, stream_intra_op_threads=stream_threads
        )
        self.backend = session(settings.session_threads)  # what the service's lone requests run on
        narrow = settings.stream_threads(self.backend.active_providers)
        self.stream_threads = narrow  # None: the service runs queued batches on its first session too
        self.stream_backend = self.backend if narrow is None else session(narrow)
        self.draft_factor = draft_factor

    def prepare(self, image: bytes) -> np.ndarray:
        """The graph input for ``image`` with the service's decoding settings."""
        from vitbench.service.preprocess import preprocess

        spec = self.manifest.input
        batch, _ = preprocess(self.decode(image), self.size, spec.pixel_mean, spec.pixel_std)
        return batch

    def decode(self, image: bytes) -> np.ndarray:
        """The pixels the service decodes from ``image`` (scaled JPEG decoding as configured)."""
        from vitbench.service.decode import decode_image, draft_target

        return decode_image(image, 10**9, draft_target(self.draft_factor, self.size)).pixels

    def decode_ms(self, image: bytes, times: int) -> list[float]:
        """``times`` decode timings (ms) of ``image``."""
        out = []
        for _ in range(times):
            t0 = time.perf_counter()
            self.decode(image)
            out.append((time.perf_counter() - t0) * 1000)
        return out

    def run_streams(self, batch: np.ndarray, seconds: float, streams: int) -> tuple[int, float, float]:
        """``streams`` threads calling ``run`` back to back for ``seconds`` on the stream session, as the
        service's inference streams do with queued batches: (runs, wall s, CPU s)."""
        stop = time.perf_counter() + seconds
        runs = [0] * streams

        def loop(k: int) -> None:
            while time.perf_counter() < stop:
                self.stream_backend.run(batch)
                runs[k] += 1

        started, cpu = time.perf_counter(), process_cpu_s()
        threads = [threading.Thread(target=loop, args=(k,)) for k in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(runs), time.perf_counter() - started, process_cpu_s() - cpu

    def run_for(self, batch: np.ndarray, seconds: float) -> tuple[list[float], float, float]:
        """Back-to-back ``run`` calls for ``seconds``: (run ms each, wall s, CPU s)."""
        self.backend.run(batch)
        times: list[float] = []
        stop = time.perf_counter() + seconds
        started, cpu = time.perf_counter(), process_cpu_s()
        while time.perf_counter() < stop or len(times) < 3:
            t0 = time.perf_counter()
            self.backend.run(batch)
            times.append((time.perf_counter() - t0) * 1000)
        return times, time.perf_counter() - started, process_cpu_s() - cpu


def process_cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of this process (all threads), or of ``pid`` from /proc (Linux; NaN
    where /proc is missing)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Connection:
    """One keep-alive HTTP/1.1 connection posting one prepared request and reading whole answers.

    A lean client: the clients share the machine with the server, and httpx costs about 3 ms of CPU
    per request at these sizes (a real client runs elsewhere). Every answer is read in full (its
    ``Content-Length``); the stage timings come from its ``Server-Timing`` header.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def request(self, path: str, body: bytes, content_type: str) -> bytes:
        """The bytes of ``POST path`` with ``body``, built once and sent many times."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode("latin-1") + body

    async def send(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send ``request``; return the answer's (status, lower-case headers, body)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        try:
            self._writer.write(request)
            head = await self._reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            if "content-length" not in headers:
                raise ConnectionError(f"answer without Content-Length: {status_line}")
            body = await self._reader.readexactly(int(headers["content-length"]))
        except BaseException:
            await self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return int(status_line.split()[1]), headers, body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


def server_timing(header: str) -> dict[str, float]:
    """``{"decode": 2.1, ...}`` from a ``Server-Timing`` value ``decode;dur=2.1, ...`` (ms)."""
    out = {}
    for metric in header.split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            if param.startswith("dur="):
                out[name] = float(param[4:])
    return out


async def drive(
    base: str, image: bytes, clients: int, seconds: float, mask_format: str
) -> tuple[list[float], Counter[str], list[dict[str, float]], float]:
    """``clients`` clients posting ``image`` back to back; returns latencies, statuses, timings, wall s.

    Each client's first answer is also parsed as JSON and must list as many detections as the lean
    count (``"label_name"`` keys in the body) says; a mismatch is counted as an error."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    timings: list[dict[str, float]] = []
    url = httpx.URL(base)
    path = f"/detect?mask_format={mask_format}&score_threshold=0.0"
    started = time.perf_counter()
    stop = started + seconds

    async def worker() -> None:
        conn = Connection(url.host, url.port or 80)
        request = conn.request(path, image, "image/jpeg")
        checked = False
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    status, headers, body = await conn.send(request)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                latency = (time.perf_counter() - t0) * 1000
                statuses[str(status)] += 1
                if status != 200:
                    continue
                found = body.count(b'"label_name":')
                if not checked:
                    checked = True
                    if len(json.loads(body)["detections"]) != found:
                        statuses["bad body"] += 1
                        continue
                latencies.append(latency)
                timings.append({**server_timing(headers.get("server-timing", "")), "_n": float(found)})
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, statuses, timings, time.perf_counter() - started


async def paired(
    base: str,
    run_bare: Callable[[], object],
    decode: Callable[[], object],
    image: bytes,
    seconds: float,
    mask_format: str,
) -> dict[str, Any]:
    """One client and the floor in lock step, for ``seconds``. Each step runs the bare session twice
    (the first to warm it, the second timed), decodes ``image`` in this process (timed), then posts it
    to the service twice (the first to warm the server after the bare runs, the second timed): each
    side's timed run follows one of its own, as in their back-to-back loops. The host's speed drifts by
    tens of percent within seconds on a shared machine; measured step by step, the service's p50 and
    the floor's (bare p50 + decode p50) see the same drift. ``excess_pct``: service p50 over the floor;
    ``pair_excess_pct``: the median over steps of each step's service ÷ (bare + decode), minus 1."""
    url = httpx.URL(base)
    conn = Connection(url.host, url.port or 80)
    request = conn.request(f"/detect?mask_format={mask_format}&score_threshold=0.0", image, "image/jpeg")
    service: list[float] = []
    bare: list[float] = []
    decoded: list[float] = []
    stop = time.perf_counter() + seconds
    try:
        while time.perf_counter() < stop or len(service) < 3:
            run_bare()
            t0 = time.perf_counter()
            run_bare()
            t1 = time.perf_counter()
            decode()
            t_decoded = time.perf_counter()
            warm, _, _ = await conn.send(request)
            t2 = time.perf_counter()
            status, _, _ = await conn.send(request)
            t3 = time.perf_counter()
            if warm != 200 or status != 200:
                raise RuntimeError(f"the service answered {warm}, {status} in the paired measurement")
            bare.append((t1 - t0) * 1000)
            decoded.append((t_decoded - t1) * 1000)
            service.append((t3 - t2) * 1000)
    finally:
        await conn.close()
    floor = statistics.median(bare) + statistics.median(decoded)
    ratios = [s / (b + d) for s, b, d in zip(service, bare, decoded, strict=True)]
    return {
        "steps": len(service),
        "service_p50_ms": round(statistics.median(service), 2),
        "bare_p50_ms": round(statistics.median(bare), 2),
        "decode_p50_ms": round(statistics.median(decoded), 2),
        "floor_p50_ms": round(floor, 2),
        "excess_pct": round((statistics.median(service) / floor - 1) * 100, 1),
        "pair_excess_pct": round((statistics.median(ratios) - 1) * 100, 1),
    }


def batch_stats(base: str) -> tuple[float, float]:
    """(count, sum) of the service's ``vitbench_batch_size`` histogram."""
    count = total = 0.0
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("vitbench_batch_size_count"):
            count = float(line.split()[-1])
        elif line.startswith("vitbench_batch_size_sum"):
            total = float(line.split()[-1])
    return count, total


def level(
    base: str,
    server_pid: int,
    bare: Bare,
    batch: np.ndarray,
    image: bytes,
    clients: int,
    seconds: float,
    mask: str,
    rounds: int,
    streams: int,
    paired_seconds: float = 0.0,
) -> dict[str, Any]:
    """One measurement in ``rounds`` alternations (so all sides see the same machine load): the bare
    session for ``seconds / 2 / rounds`` (server idle) plus a few in-process decodes, the bare session
    driven by ``streams`` threads as long, then the service for ``seconds / rounds``. At one client,
    then :func:`paired` for ``paired_seconds`` (0: not run)."""
    bare_times: list[float] = []
    decode_times: list[float] = []
    latencies: list[float] = []
    timings: list[dict[str, float]] = []
    statuses: Counter[str] = Counter()
    bare_wall = bare_cpu = wall = server_cpu = client_cpu = streams_wall = 0.0
    streams_runs = 0
    before = batch_stats(base)
    for _ in range(rounds):
        times, w, c = bare.run_for(batch, seconds / 2 / rounds)
        bare_times += times
        bare_wall += w
        bare_cpu += c
        runs, w, _ = bare.run_streams(batch, seconds / 2 / rounds, streams)
        streams_runs += runs
        streams_wall += w
        decode_times += bare.decode_ms(image, 5)
        s0, c0 = process_cpu_s(server_pid), process_cpu_s()
        lat, st, tim, w = asyncio.run(drive(base, image, clients, seconds / rounds, mask))
        server_cpu += process_cpu_s(server_pid) - s0
        client_cpu += process_cpu_s() - c0
        latencies += lat
        statuses += st
        timings += tim
        wall += w
    after = batch_stats(base)
    lock_step = None
    if clients == 1 and paired_seconds > 0:
        lock_step = asyncio.run(
            paired(
                base,
                lambda: bare.backend.run(batch),
                lambda: bare.decode(image),
                image,
                paired_seconds,
                mask,
            )
        )
    answered = max(len(latencies), 1)
    batches = after[0] - before[0]
    service_ips = len(latencies) / wall
    bare_ips = len(bare_times) / bare_wall
    streams_ips = streams_runs / streams_wall
    errors = sum(n for status, n in statuses.items() if status != "200")
    return {
        "clients": clients,
        "mask_format": mask,
        "rounds": rounds,
        "service_images_per_s": round(service_ips, 2),
        "bare_images_per_s": round(bare_ips, 2),
        "ratio": round(service_ips / bare_ips, 3),
        "bare_streams": streams,
        "bare_streams_intra_op_threads": bare.stream_threads,
        "bare_streams_images_per_s": round(streams_ips, 2),
        "ratio_to_bare_streams": round(service_ips / streams_ips, 3),
        "bare_p50_ms": round(statistics.median(bare_times), 1),
        "decode_p50_ms_in_process": round(statistics.median(decode_times), 2),
        "server_cpu_ms_per_image": round(server_cpu * 1000 / answered, 1),
        "bare_cpu_ms_per_image": round(bare_cpu * 1000 / len(bare_times), 1),
        "client_cpu_ms_per_image": round(client_cpu * 1000 / answered, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "stage_p50_ms": {s: round(percentile([t[s] for t in timings], 50) or 0.0, 2) for s in STAGES},
        # the server's own decode-to-response time; p50 minus this is HTTP + the client
        "server_total_p50_ms": round(percentile([t["total"] for t in timings], 50) or 0.0, 2),
        "mean_batch": round((after[1] - before[1]) / batches, 2) if batches else 0.0,
        "detections_per_image": round(statistics.mean(t["_n"] for t in timings), 1) if timings else 0.0,
        "requests": sum(statuses.values()),
        "errors": errors,
        "statuses": dict(statuses),
        "paired": lock_step,
    }


def describe_paired(p: dict[str, Any]) -> str:
    """One line of a :func:`paired` result."""
    return (
        f"in lock step ({p['steps']} steps): service p50 {p['service_p50_ms']:.1f} ms, "
        f"bare {p['bare_p50_ms']:.1f} + decode {p['decode_p50_ms']:.2f} = {p['floor_p50_ms']:.1f} ms, "
        f"{p['excess_pct']:+.1f} % (step by step {p['pair_excess_pct']:+.1f} %)"
    )


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| image | masks | clients | service img/s | bare img/s | service ÷ bare | bare ×N img/s "
        "| service ÷ bare ×N | p50 ms | p99 ms | paired p50 ÷ floor "
        "| decode | preprocess | queue | inference | postprocess | mean batch | errors "
        "| server CPU ms/img | bare CPU ms/img | client CPU ms/img | load 1m |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        st = r["stage_p50_ms"]
        lock_step = r.get("paired")
        paired_cell = (
            f"{lock_step['service_p50_ms']:.1f} ÷ {lock_step['floor_p50_ms']:.1f} "
            f"({lock_step['excess_pct']:+.1f} %)"
            if lock_step
            else "—"
        )
        lines.append(
            f"| {r['image']} | {r['mask_format']} | {r['clients']} | {r['service_images_per_s']:.2f} "
            f"| {r['bare_images_per_s']:.2f} | **{r['ratio']:.2f}** "
            f"| {r['bare_streams_images_per_s']:.2f} | {r['ratio_to_bare_streams']:.2f} "
            f"| {r['p50_ms'] or 0:.1f} "
            f"| {r['p99_ms'] or 0:.1f} | {paired_cell} | "
            + " | ".join(f"{st[s]:.1f}" for s in STAGES)
            + f" | {r['mean_batch']} | {r['errors']} | {r['server_cpu_ms_per_image']} "
            f"| {r['bare_cpu_ms_per_image']} | {r['client_cpu_ms_per_image']} | {r['load_average_1m']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_source(parser)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level (bare: half)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="bare / bare ×N / service alternations per level (the same load on all)",
    )
    parser.add_argument("--sizes", default="640x480,1920x1080", help="WxH of the posted photographs")
    parser.add_argument("--concurrency", default="1,4,8", help="client counts")
    parser.add_argument("--masks", default="rle,none", help="mask formats")
    parser.add_argument("--providers", default="CPUExecutionProvider", help="ORT providers, best first")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = ORT default)")
    parser.add_argument(
        "--spinning", action="store_true", help="let ORT's intra-op threads spin (server and bare alike)"
    )
    parser.add_argument(
        "--streams",
        type=int,
        default=0,
        help="the service's inference streams, and the threads driving the bare ×N session "
        "(0 = the service's default)",
    )
    parser.add_argument(
        "--stream-threads",
        type=int,
        help="the service's VITBENCH_STREAM_INTRA_OP_THREADS (-1 = cores / streams, 0 = no second "
        "session; default: the service's default); bare ×N runs on a session with as many threads",
    )
    parser.add_argument(
        "--paired-seconds",
        type=float,
        help="at 1 client, then this long the service and the floor in lock step, request by request "
        "(default: --duration; 0: skip)",
    )
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    cpu = cpu_description()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or export_tiny(Path(tmp))
        env = {
            "VITBENCH_PROVIDERS": args.providers,
            "VITBENCH_INTRA_OP_THREADS": str(args.threads),
            "VITBENCH_INTRA_OP_SPINNING": "1" if args.spinning else "0",
            "VITBENCH_QUEUE_SIZE": "64",
            "VITBENCH_REQUEST_TIMEOUT_S": "120",
        }
        from vitbench.service.settings import ServiceSettings

        defaults = ServiceSettings()
        draft_factor = defaults.jpeg_draft_factor
        streams = args.streams or defaults.inference_streams
        env["VITBENCH_INFERENCE_STREAMS"] = str(streams)
        stream_threads = (
            defaults.stream_intra_op_threads if args.stream_threads is None else args.stream_threads
        )
        env["VITBENCH_STREAM_INTRA_OP_THREADS"] = str(stream_threads)
        bare = Bare(
            model_dir,
            args.providers.split(","),
            args.threads,
            draft_factor,
            args.spinning,
            stream_threads,
            streams,
        )
        port = free_port()
        proc = start_server(model_dir, port, env)
        base = f"http://127.0.0.1:{port}"
        print(f"on {cpu}", flush=True)
        try:
            for size in args.sizes.split(","):
                width, height = (int(v) for v in size.split("x"))
                image = photograph(width, height)
                batch = bare.prepare(image)
                asyncio.run(drive(base, image, 1, 2.0, "rle"))  # warm the path
                for mask in args.masks.split(","):
                    for clients in (int(c) for c in args.concurrency.split(",")):
                        row: dict[str, Any] = {"image": size}
                        row |= level(
                            base,
                            proc.pid,
                            bare,
                            batch,
                            image,
                            clients,
                            args.duration,
                            mask,
                            args.rounds,
                            streams,
                            args.duration if args.paired_seconds is None else args.paired_seconds,
                        )
                        rows.append(row)
                        floor = row["bare_p50_ms"] + row["decode_p50_ms_in_process"]
                        print(
                            f"{size} {mask:>4} c={clients}: service {row['service_images_per_s']:.2f} img/s, "
                            f"bare {row['bare_images_per_s']:.2f} img/s, ratio {row['ratio']:.2f}, "
                            f"bare x{streams} {row['bare_streams_images_per_s']:.2f} img/s "
                            f"(ratio {row['ratio_to_bare_streams']:.2f}), "
                            f"p50 {row['p50_ms'] or 0:.1f} ms (server {row['server_total_p50_ms']:.1f}, "
                            f"bare+decode {floor:.1f}), "
                            f"errors {row['errors']}, CPU ms/img server {row['server_cpu_ms_per_image']} "
                            f"bare {row['bare_cpu_ms_per_image']} clients {row['client_cpu_ms_per_image']}, "
                            f"load {row['load_average_1m']}",
                            flush=True,
                        )
                        if row["paired"]:
                            print(f"  {describe_paired(row['paired'])}", flush=True)
        finally:
            stop_servers(proc)
    table = markdown(rows)
    print(table)
    if args.json:
        payload = {
            "machine": {
                "cpus": os.cpu_count(),
                "cpu": cpu,
                "platform": platform.platform(),
                "load": os.getloadavg(),
            },
            "args": {k: str(v) for k, v in vars(args).items()},
            "rows": rows,
            "markdown": table,
        }
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
