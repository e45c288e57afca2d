"""``python -m bench.overhead``: what the gateway adds over going straight to the upstream.

Against a zero-latency SGLang simulator it measures requests/s at concurrency 32, p50/p99
latency (and streaming time to first token) at a fixed 200 req/s, and gateway CPU-seconds per
1,000 requests, each beside the same load sent direct; then featureless pass-through proxies
(the floor for each HTTP client), the ASGI server, and a profile of the gateway's hot path.
Results go to ``bench/results/overhead.json``; ``docs/performance.md`` explains them.
"""
