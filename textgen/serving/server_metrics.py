"""ServerMetrics: what `GET /metrics` reports, in Prometheus' text format (prometheus_client).

Each server has its own registry, so several servers in one process (the tests) do not share
counts.
"""

import prometheus_client

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self):
        self.registry = prometheus_client.CollectorRegistry()
        registry = self.registry
        self.requests = prometheus_client.Counter(
            "textgen_serve_requests",
            "HTTP requests answered, by model, endpoint and status code",
            ["model", "endpoint", "code"],
            registry=registry,
        )
        self.latency = prometheus_client.Histogram(
            "textgen_serve_request_seconds",
            "Time from a request's arrival to its answer (a stream: to its last event)",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = prometheus_client.Histogram(
            "textgen_serve_batch_rows",
            "Rows per model call after batching (before padding)",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = prometheus_client.Gauge(
            "textgen_serve_queue_depth",
            "Predict requests waiting for the model",
            ["model"],
            registry=registry,
        )
        self.active_streams = prometheus_client.Gauge(
            "textgen_serve_active_streams",
            "Streams being generated now (the --max-streams slots in use)",
            registry=registry,
        )
        self.stream_blocks = prometheus_client.Counter(
            "textgen_serve_stream_blocks",
            "Blocks of 64 tokens generated for streams",
            ["model"],
            registry=registry,
        )
        self.stream_cancelled = prometheus_client.Counter(
            "textgen_serve_streams_cancelled",
            "Streams stopped because their client went away",
            ["model"],
            registry=registry,
        )

    def render(self):
        return prometheus_client.generate_latest(self.registry)

    content_type = prometheus_client.CONTENT_TYPE_LATEST
