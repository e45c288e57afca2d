"""Charges waiting for Redis, journalled to a local file so a stop or a crash cannot lose them.

Each process appends to a file of its own (``charges-<pid>-<random>.jsonl``) and holds an
exclusive ``flock`` on it while it lives. When a journal is opened it adopts every file in the
directory that nobody holds (its process stopped or died): their entries join this process's
queue and its file, and the orphan is removed. Once every waiting charge has reached Redis the
process's file is removed. Lines are flushed as written (no fsync: a process crash keeps them,
a machine crash may lose the last ones).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from policies.reservation import Reservation
from policies.spend import Charge

log = logging.getLogger("switchyard.policies.charge_journal")

Entry = tuple[list[str], Charge, float, Reservation | None]
"""Scope ids, the charge, when it was made, and the reservation it settles (if any)."""


def encode(entry: Entry) -> str:
    """One journal line for ``entry``."""
    scope_ids, charge, at, reservation = entry
    return json.dumps({"scopes": scope_ids, "charge": asdict(charge), "at": at,
                       "reservation": asdict(reservation) if reservation else None})


def decode(line: str) -> Entry:
    """The entry a journal line holds (``ValueError``/``KeyError``/``TypeError`` if torn)."""
    data: dict[str, Any] = json.loads(line)
    held = data["reservation"]
    reservation = None if held is None else Reservation(**{**held, "scope_ids": tuple(held["scope_ids"])})
    return list(data["scopes"]), Charge(**data["charge"]), float(data["at"]), reservation


class ChargeJournal:
    """This process's journal file in ``directory``.

    Args:
        directory: Where journal files live (created if missing).
    """

    def __init__(self, directory: str | Path) -> None:
        self._dir = Path(directory)
        self._path = self._dir / f"charges-{os.getpid()}-{os.urandom(4).hex()}.jsonl"
        self._file: IO[str] | None = None

    def adopt(self) -> list[Entry]:
        """Entries of every journal nobody holds; they are moved into this process's file."""
        self._dir.mkdir(parents=True, exist_ok=True)
        adopted: list[Entry] = []
        for path in sorted(self._dir.glob("charges-*.jsonl")):
            if path == self._path:
                continue
            try:
                with path.open("r+", encoding="utf-8") as orphan:
                    try:
                        fcntl.flock(orphan, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # its process is alive and replays it itself
                    entries = _read(orphan, path)
                    for entry in entries:
                        self.append(entry)
                    adopted += entries
                    path.unlink()
            except FileNotFoundError:
                continue  # another process adopted it first
        if adopted:
            log.warning("replaying %d charges journalled by a stopped gateway", len(adopted))
        return adopted

    def append(self, entry: Entry) -> None:
        """Journal one waiting charge."""
        if self._file is None:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._file = self._path.open("a", encoding="utf-8")
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file.write(encode(entry) + "\n")
        self._file.flush()

    def clear(self) -> None:
        """Every waiting charge reached Redis: remove this process's file."""
        if self._file is not None:
            self._path.unlink(missing_ok=True)
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Release the file (kept if charges still wait: the next gateway adopts it)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _read(handle: IO[str], path: Path) -> list[Entry]:
    entries: list[Entry] = []
    for number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            entries.append(decode(line))
        except (ValueError, KeyError, TypeError):  # a torn last line of a killed process
            log.error("%s:%d: unreadable journal line skipped", path, number)
    return entries
