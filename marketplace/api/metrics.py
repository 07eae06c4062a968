"""Prometheus metrics, on a registry of the service's own (tests create many apps)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
ORDERS_SUBMITTED = Counter("market_orders_submitted_total", "Orders accepted by the API", ["side"], registry=REGISTRY)
HTTP_REQUESTS = Counter("market_http_requests_total", "HTTP requests", ["method", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram("market_http_request_seconds", "HTTP request latency", registry=REGISTRY)
LOOP_PASSES = Gauge("market_loop_passes", "Background loop passes completed", registry=REGISTRY)
LOOP_ERRORS = Gauge("market_loop_errors", "Background loop passes that failed", registry=REGISTRY)
INDEXED_BLOCK = Gauge("market_indexed_block", "Last block the indexer applied", registry=REGISTRY)
