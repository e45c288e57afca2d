"""A minimal asynchronous DNS client: A and AAAA lookups against one named server over UDP.

The standard library resolves through ``getaddrinfo``, which cannot be pointed at a given
server and hides record changes behind the system's caches. Worker discovery needs the current
A/AAAA set of a name (a Kubernetes headless Service) every few seconds, from the cluster's DNS
server (``/etc/resolv.conf``) or one named in the policy; this asks exactly that, nothing more.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import struct
from pathlib import Path

A, AAAA = 1, 28
_RESPONSE_CODES = {1: "format error", 2: "server failure", 4: "not implemented", 5: "refused"}
NXDOMAIN = 3


class DnsError(Exception):
    """The DNS server did not answer, or answered with an error other than "no such name".

    Never reaches a client: discovery logs it and keeps the workers it has."""


def system_nameserver(resolv_conf: Path = Path("/etc/resolv.conf")) -> tuple[str, int]:
    """The first ``nameserver`` of ``resolv.conf`` (what a pod in Kubernetes is given)."""
    try:
        for line in resolv_conf.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                return fields[1], 53
    except OSError:
        pass
    return "127.0.0.1", 53


def _query(name: str, record_type: int, query_id: int) -> bytes:
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 1)  # recursion desired, one OPT
    labels = b"".join(bytes([len(part)]) + part.encode("idna") for part in name.rstrip(".").split(".") if part)
    question = labels + b"\x00" + struct.pack("!HH", record_type, 1)
    opt = b"\x00" + struct.pack("!HHIH", 41, 4096, 0, 0)  # EDNS0: answers up to 4 KiB over UDP
    return header + question + opt


def _skip_name(message: bytes, offset: int) -> int:
    while True:
        length = message[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return offset + 2
        offset += 1 + length


def parse_addresses(message: bytes, query_id: int) -> list[str]:
    """The A and AAAA addresses of a DNS response (empty for "no such name").

    Raises:
        DnsError: an answer to another query, a truncated message, or an error code.
    """
    if len(message) < 12:
        raise DnsError("DNS answer shorter than its header")
    answer_id, flags, questions, answers = struct.unpack("!HHHH", message[:8])
    if answer_id != query_id:
        raise DnsError("DNS answer to another query")
    code = flags & 0x000F
    if code == NXDOMAIN:
        return []
    if code:
        raise DnsError(f"DNS server answered {_RESPONSE_CODES.get(code, code)}")
    if flags & 0x0200:
        raise DnsError("DNS answer truncated")
    offset = 12
    for _ in range(questions):
        offset = _skip_name(message, offset) + 4
    found: list[str] = []
    for _ in range(answers):
        offset = _skip_name(message, offset)
        record_type, _, _, length = struct.unpack("!HHIH", message[offset:offset + 10])
        offset += 10
        data = message[offset:offset + length]
        offset += length
        if record_type == A and length == 4:
            found.append(str(ipaddress.IPv4Address(data)))
        elif record_type == AAAA and length == 16:
            found.append(str(ipaddress.IPv6Address(data)))
    return found


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, answer: asyncio.Future[bytes]) -> None:
        self._answer = answer

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self._answer.done():
            self._answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self._answer.done():
            self._answer.set_exception(DnsError(f"DNS server unreachable: {exc}"))


async def resolve(name: str, server: tuple[str, int], record_type: int, timeout_s: float = 1.0,
                  rng: random.Random | None = None) -> list[str]:
    """The addresses of ``name`` of one record type (``A`` or ``AAAA``), asked of ``server``.

    Raises:
        DnsError: no answer within ``timeout_s``, or an error answer.
    """
    query_id = (rng or random.Random()).randrange(1 << 16)
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Exchange(answer), remote_addr=server)
    try:
        transport.sendto(_query(name, record_type, query_id))
        try:
            message = await asyncio.wait_for(answer, timeout_s)
        except TimeoutError as exc:
            raise DnsError(f"no DNS answer for {name} from {server[0]}:{server[1]} in {timeout_s}s") from exc
    finally:
        transport.close()
    return parse_addresses(message, query_id)
