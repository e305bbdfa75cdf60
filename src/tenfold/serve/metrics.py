"""Prometheus metrics for ``tenfold serve`` (``GET /metrics``, text exposition format), with prometheus-client.

- ``tenfold_requests_total{endpoint, status}``: finished HTTP requests by route and status code;
- ``tenfold_prompt_tokens_total``, ``tenfold_completion_tokens_total``;
- ``tenfold_queue_depth``, ``tenfold_active_requests``: the engine's waiting and running jobs (read at scrape time);
- ``tenfold_time_to_first_token_seconds``, ``tenfold_inter_token_latency_seconds``: histograms;
- ``tenfold_session_hits_total`` / ``_misses_total`` / ``_evictions_total``, ``tenfold_sessions``,
  ``tenfold_cache_memory_bytes`` (sessions plus the caches of running requests).

Each app has its own registry, so several servers (or tests) in one process do not share counts.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/responses/input_tokens", "/v1/embeddings",
           "/v1/messages", "/v1/messages/count_tokens", "/tokenize", "/detokenize", "/v1/models", "/health", "/metrics")


class _EngineCollector:
    """Reads the engine's counters and gauges when Prometheus scrapes."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        e = self.engine
        with e._cond:
            waiting, active, stats = len(e.waiting), len(e.active), dict(e.stats)
            sessions, evicted = len(e.sessions), e.sessions.evicted
            memory = e.sessions.memory_bytes() + e._job_cache_bytes()
        yield GaugeMetricFamily("tenfold_queue_depth", "Requests waiting for a slot.", value=waiting)
        yield GaugeMetricFamily("tenfold_active_requests", "Requests generating now.", value=active)
        yield GaugeMetricFamily("tenfold_sessions", "Sessions held.", value=sessions)
        yield GaugeMetricFamily("tenfold_cache_memory_bytes", "Sink-cache memory of sessions and running requests.",
                                value=memory)
        for name, key, doc in (("tenfold_session_hits", "session_hits", "Requests that continued a session's cache."),
                               ("tenfold_session_misses", "session_misses", "Requests whose history did not match "
                                "their session's cache (re-prefilled)."),
                               ("tenfold_requests_failed", "failed", "Engine jobs that failed."),
                               ("tenfold_requests_cancelled", "cancelled", "Engine jobs cancelled (client gone).")):
            yield CounterMetricFamily(name, doc, value=stats[key])
        yield CounterMetricFamily("tenfold_session_evictions", "Sessions evicted (LRU, TTL, memory).", value=evicted)


class ServeMetrics:
    """The metrics of one server: a registry, request/token counters, latency histograms and the engine's state."""

    def __init__(self, engine):
        self.registry = CollectorRegistry()
        self.requests = Counter("tenfold_requests", "Finished HTTP requests.", ["endpoint", "status"],
                                registry=self.registry)
        self.prompt_tokens = Counter("tenfold_prompt_tokens", "Prompt tokens of finished requests.",
                                     registry=self.registry)
        self.completion_tokens = Counter("tenfold_completion_tokens", "Generated tokens.", registry=self.registry)
        self.ttft = Histogram("tenfold_time_to_first_token_seconds", "Submit to first sampled token.",
                              buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.itl = Histogram("tenfold_inter_token_latency_seconds", "Time between a choice's tokens.",
                             buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_EngineCollector(engine))
        engine.observer = self.observe

    def observe(self, kind: str, seconds: float) -> None:
        (self.ttft if kind == "ttft" else self.itl).observe(seconds)

    def tokens(self, prompt: int, completion: int) -> None:
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app):
        """ASGI middleware counting every HTTP response by route and status."""
        async def counted(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            path = scope.get("path", "")
            endpoint = path if path in _ROUTES else ("/v1/models/{id}" if path.startswith("/v1/models/") else
                                                     "/v1/responses/{id}" if path.startswith("/v1/responses/") else
                                                     "other")

            async def tracked(message):
                if message["type"] == "http.response.start":
                    self.requests.labels(endpoint, str(message["status"])).inc()
                await send(message)

            return await app(scope, receive, tracked)

        return counted
