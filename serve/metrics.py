"""Prometheus metrics of the gateway (one registry per app, so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("infimed_requests", "Requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("infimed_request_seconds", "Request latency", ["route"], buckets=_LATENCY, registry=r)
        self.ttft = Histogram("infimed_time_to_first_token_seconds", "Time to the first streamed chunk", buckets=_LATENCY, registry=r)
        self.images = Counter("infimed_images", "Images forwarded to the engine", registry=r)
        self.dicom_parts = Counter("infimed_dicom_parts", "DICOM parts received", registry=r)
        self.render_seconds = Histogram("infimed_render_seconds", "Time spent rendering the images of one request", buckets=_LATENCY, registry=r)
        self.errors = Counter("infimed_errors", "Errors by type", ["type"], registry=r)
        self.cancellations = Counter("infimed_cancellations", "Streams cancelled because the client disconnected", registry=r)
        self.in_flight = Gauge("infimed_in_flight", "Requests being served", registry=r)
        self.queued = Gauge("infimed_queued", "Requests waiting for a slot", registry=r)
        self.engine_up = Gauge("infimed_engine_up", "Engines reachable", registry=r)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of a sample (for tests and the load benchmark)."""
        v = self.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else v
