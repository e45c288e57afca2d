"""Contract tests: the gateway checked against its upstreams' and clients' own definitions.

The root ``tests/conftest.py`` applies here too: every ``ThreadedStack`` these tests start has
its OpenAI-route responses checked against OpenAI's spec (``tests/contracts/openai/``).
"""
