"""A radix tree over token ids: the simulated worker's prefix cache, like SGLang's RadixAttention.

Edges hold runs of tokens and split where two sequences diverge. A running request holds a
reference on the deepest node it uses (which pins the whole path up to the root), so only
unreferenced leaves are evicted, least recently used first, once the tree exceeds capacity.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import NamedTuple


class RadixNode:
    """One edge of the tree and the node it leads to; the root has an empty ``key``."""

    __slots__ = ("children", "key", "last_access", "parent", "ref")

    def __init__(self, key: list[int], parent: RadixNode | None) -> None:
        self.key = key
        self.parent = parent
        self.children: dict[int, RadixNode] = {}
        self.ref = 0
        """Running requests whose path passes through this node; > 0 means not evictable."""
        self.last_access = 0


class PrefixMatch(NamedTuple):
    """The result of a lookup or insert."""

    length: int
    """Leading tokens that were already cached."""
    node: RadixNode
    """The deepest node on that path: pass it to ``inc_ref``/``dec_ref``."""


class RadixCache:
    """Bounded prefix cache over token ids with LRU eviction of unreferenced leaves.

    Args:
        capacity_tokens: Most tokens kept; ``insert`` evicts to stay within it unless
            referenced nodes alone exceed it.
    """

    def __init__(self, capacity_tokens: int) -> None:
        if capacity_tokens < 0:
            raise ValueError("capacity_tokens must be >= 0")
        self.capacity_tokens = capacity_tokens
        self.reset()

    def reset(self) -> None:
        """Drop every cached token (``/flush_cache``); references on old nodes become no-ops."""
        self._root = RadixNode([], None)
        self._clock = 0
        self._total = 0
        self._protected = 0
        # lazy heap of (last_access, id, node) for leaves; stale entries are skipped on pop
        self._heap: list[tuple[int, int, RadixNode]] = []
        self._nodes = 1

    @property
    def root(self) -> RadixNode:
        """The root node (empty key, never evicted)."""
        return self._root

    @property
    def total_tokens(self) -> int:
        """Tokens held in the tree."""
        return self._total

    @property
    def evictable_tokens(self) -> int:
        """Tokens on nodes no running request references."""
        return self._total - self._protected

    def match_prefix(self, tokens: Sequence[int]) -> int:
        """Length of the longest cached prefix of ``tokens``."""
        return self.match(tokens).length

    def match(self, tokens: Sequence[int]) -> PrefixMatch:
        """Find the longest cached prefix, split an edge so it ends on a node, and touch it."""
        if not isinstance(tokens, list):
            tokens = list(tokens)
        self._clock += 1
        now = self._clock
        node = self._root
        pos, end = 0, len(tokens)
        while pos < end:
            child = node.children.get(tokens[pos])
            if child is None:
                break
            common = _common_length(child.key, tokens, pos)
            if common < len(child.key):
                child = self._split(child, common)
            child.last_access = now
            node, pos = child, pos + common
        if node is not self._root and not node.children and node.ref == 0:
            self._push_leaf(node)  # its access time changed: re-rank it
        return PrefixMatch(pos, node)

    def insert(self, tokens: Sequence[int]) -> PrefixMatch:
        """Cache ``tokens``, evicting LRU leaves first so the tree stays within capacity.

        Returns the match as it was before inserting (``length`` = tokens already cached) and
        the node that now ends the inserted path. Sequences longer than the capacity are cut.
        """
        if len(tokens) > self.capacity_tokens:
            tokens = tokens[: self.capacity_tokens]
        found = self.match(tokens)
        missing = len(tokens) - found.length
        if missing == 0:
            return found
        # pin the matched path while making room, so the prefix we extend survives
        self.inc_ref(found.node)
        self.evict(self._total + missing - self.capacity_tokens)
        self.dec_ref(found.node)
        leaf = RadixNode(list(tokens[found.length :]), found.node)
        leaf.last_access = self._clock
        found.node.children[leaf.key[0]] = leaf
        self._total += missing
        self._nodes += 1
        self._push_leaf(leaf)
        return PrefixMatch(found.length, leaf)

    def inc_ref(self, node: RadixNode) -> None:
        """Pin ``node`` and its ancestors against eviction (a request starts using them)."""
        tracked = self._in_tree(node)
        current = node
        while current.parent is not None:
            if current.ref == 0 and tracked:
                self._protected += len(current.key)
            current.ref += 1
            current = current.parent

    def dec_ref(self, node: RadixNode) -> None:
        """Undo one ``inc_ref``; nodes nobody references become evictable again."""
        tracked = self._in_tree(node)
        current = node
        while current.parent is not None:
            current.ref -= 1
            if current.ref == 0 and tracked:
                self._protected -= len(current.key)
                if not current.children:
                    self._push_leaf(current)
            current = current.parent

    def evict(self, num_tokens: int) -> int:
        """Evict unreferenced leaves, least recently used first, until ``num_tokens`` are freed.

        Returns the number of tokens freed (less than asked when the rest is referenced).
        """
        freed = 0
        heap = self._heap
        while freed < num_tokens and heap:
            stamp, _, node = heapq.heappop(heap)
            if not self._is_evictable_leaf(node, stamp):
                continue
            parent = node.parent
            assert parent is not None
            del parent.children[node.key[0]]
            node.parent = None
            freed += len(node.key)
            self._total -= len(node.key)
            self._nodes -= 1
            if parent is not self._root and not parent.children and parent.ref == 0:
                self._push_leaf(parent)
        return freed

    def _in_tree(self, node: RadixNode) -> bool:
        """False for nodes of a tree dropped by ``reset``: their counts no longer matter."""
        while node.parent is not None:
            node = node.parent
        return node is self._root

    @staticmethod
    def _is_evictable_leaf(node: RadixNode, stamp: int) -> bool:
        parent = node.parent
        return (
            node.last_access == stamp
            and node.ref == 0
            and not node.children
            and parent is not None
            and parent.children.get(node.key[0]) is node
        )

    def _split(self, child: RadixNode, at: int) -> RadixNode:
        """Cut ``child``'s edge after ``at`` tokens; return the new node holding the head."""
        parent = child.parent
        assert parent is not None
        head = RadixNode(child.key[:at], parent)
        head.ref = child.ref
        head.last_access = child.last_access
        head.children[child.key[at]] = child
        parent.children[head.key[0]] = head
        child.key = child.key[at:]
        child.parent = head
        self._nodes += 1
        return head

    def _push_leaf(self, node: RadixNode) -> None:
        heap = self._heap
        if len(heap) > 4 * self._nodes + 64:
            # too many stale entries: keep only the live ones
            heap[:] = [e for e in heap if self._is_evictable_leaf(e[2], e[0])]
            heapq.heapify(heap)
        heapq.heappush(heap, (node.last_access, id(node), node))


def _common_length(key: list[int], tokens: list[int], pos: int) -> int:
    """How many leading tokens of ``key`` equal ``tokens[pos:]``."""
    n = min(len(key), len(tokens) - pos)
    if key[:n] == tokens[pos : pos + n]:
        return n
    i = 0
    while key[i] == tokens[pos + i]:
        i += 1
    return i
