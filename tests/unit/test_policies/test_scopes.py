"""Scope ids escape names: ``:`` in a tenant or key name cannot merge two scopes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from policies.scopes import hash_tag, key_scope, scope_tenant, tenant_scope


def test_colons_in_names_do_not_collide() -> None:
    # issue 15 finding 11: tenant "a" key "b:c" and tenant "a:b" key "c" shared "key:a:b:c"
    assert key_scope("a", "b:c") != key_scope("a:b", "c")
    assert tenant_scope("a:b") != key_scope("a", "b")
    assert hash_tag(key_scope("a", "b:c")) == hash_tag(tenant_scope("a")) == "{a}"
    assert hash_tag(key_scope("a:b", "c")) == "{a%3Ab}"


names = st.text(min_size=1, max_size=12)


@given(names, names, names, names)
def test_distinct_names_give_distinct_scopes(t1: str, k1: str, t2: str, k2: str) -> None:
    assert (key_scope(t1, k1) == key_scope(t2, k2)) == ((t1, k1) == (t2, k2))
    assert scope_tenant(key_scope(t1, k1)) == scope_tenant(tenant_scope(t1))
    tag = hash_tag(key_scope(t1, k1))
    assert tag.count("{") == 1 and tag.count("}") == 1, "a name cannot forge a hash tag"
