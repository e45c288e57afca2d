"""``python -m bench.cache_routing``: does cache-aware routing save prefill on shared prefixes?

A seeded multi-turn workload (a few long system prompts, many interleaved conversations,
Poisson arrivals) is replayed through the gateway over four simulated SGLang workers whose
caches cannot hold everything, once per selection policy, with one and with two gateway
replicas; beside it a reference that pins each conversation to a worker chosen in advance,
and SGLang's own router when it is installed. ``--decision-cost`` times one cache-aware
decision at 16 workers and 10k cached conversations each. Results go to
``bench/results/cache_routing.json`` and ``docs/img/cache_routing.png``; ``docs/routing.md``
explains them.
"""
