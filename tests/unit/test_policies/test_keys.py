from __future__ import annotations

import pytest

from backends.errors import AuthenticationError
from policies.keys import KeyRing, hash_key, new_key
from policies.loader import parse_policy


def ring() -> KeyRing:
    return KeyRing(parse_policy(f"""
backends: {{local: {{kind: sglang, workers: ["http://127.0.0.1:1"]}}}}
models: {{a: {{deployments: [{{backend: local, model: m}}]}}, b: {{deployments: [{{backend: local, model: m}}]}}}}
tenants:
  acme: {{models: [a], keys: [{{name: acme-1, sha256: {hash_key("sy-acme")}}}]}}
  all: {{models: ["*"], keys: [{{name: all-1, sha256: {hash_key("sy-all")}}}]}}
"""))


def test_hash_is_sha256_hex() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_new_keys_are_unique_and_prefixed() -> None:
    a, b = new_key(), new_key()
    assert a != b and a.startswith("sy-") and len(a) > 40


def test_authenticate_maps_key_to_tenant() -> None:
    caller = ring().authenticate("Bearer sy-acme")
    assert (caller.tenant, caller.key_name) == ("acme", "acme-1")
    assert caller.may_use("a") and not caller.may_use("b")
    assert ring().authenticate("bearer  sy-all ").may_use("b")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic sy-acme", "Bearer sy-wrong", "sy-acme"])
def test_bad_keys_are_401(header: str | None) -> None:
    with pytest.raises(AuthenticationError):
        ring().authenticate(header)
