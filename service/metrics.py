"""Prometheus metrics of one app instance, on its own registry (no process-global state).

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms) and separate queue
time from compute time as Triton does (``nv_inference_queue_duration_us`` vs ``..._compute_...``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGES = ("decode", "preprocess", "queue", "inference", "postprocess")


class ServiceMetrics:
    """Counters, histograms and gauges of the inference service."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "vitbench_http_requests_total",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "vitbench_http_request_duration_seconds",
            "Wall time of HTTP requests by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "vitbench_stage_duration_seconds",
            "Time per /detect stage: decode, preprocess, queue, inference, postprocess.",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "vitbench_batch_size",
            "Images per inference batch.",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "vitbench_batch_duration_seconds",
            "Compute time of one inference batch.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "vitbench_queue_depth", "Requests waiting for inference.", registry=self.registry
        )
        self.in_flight = Gauge(
            "vitbench_requests_in_flight", "/detect requests being handled.", registry=self.registry
        )
        self.rejected = Counter(
            "vitbench_rejected_total",
            "/detect requests refused, by reason (too_large, unsupported, undecodable, overloaded, "
            "timeout, unauthorized, not_ready).",
            ["reason"],
            registry=self.registry,
        )
        self.detections = Histogram(
            "vitbench_detections_per_image",
            "Detections returned per image.",
            buckets=(0, 1, 2, 5, 10, 20, 50, 100, 300, 1000),
            registry=self.registry,
        )
        self.model_info = Info("vitbench_model", "The served model.", registry=self.registry)
        self.ready = Gauge(
            "vitbench_ready", "1 when the model is loaded and warmed up.", registry=self.registry
        )

        # the per-stage children, bound once: ``labels()`` takes a lock and a lookup on every call
        self._stages = {stage: self.stage_seconds.labels(stage=stage) for stage in STAGES}

    def observe_stages(self, seconds: dict[str, float]) -> None:
        """Record one /detect request's stage times (keys from ``STAGES``)."""
        for stage, value in seconds.items():
            self._stages[stage].observe(value)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one inference batch."""
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
