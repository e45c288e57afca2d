"""Counts garbage collections and their time in a ``switchyard serve`` process.

Put this folder first on ``PYTHONPATH`` and set ``GC_PROBE=<folder>``; every serving process
writes ``gc-<pid>.json`` there when it is stopped: collections and seconds per generation, and
the number of objects the collector tracks. ``GC_THRESH=a,b,c`` sets the thresholds first.

    GC_PROBE=/tmp/gc PYTHONPATH=bench/overhead/gc_probe python -m bench.overhead --only gateway

(docs/performance.md: how the collector's share of the gateway was measured).
"""

import os
import sys

if os.environ.get("GC_PROBE") and "serve" in sys.argv:
    import atexit
    import gc
    import json
    import signal
    import time

    _stats = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
    _started = [0.0]

    def _callback(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
        else:
            entry = _stats[info["generation"]]
            entry[0] += 1
            entry[1] += time.perf_counter() - _started[0]

    def _dump() -> None:
        out = os.path.join(os.environ["GC_PROBE"], f"gc-{os.getpid()}.json")
        with open(out, "w") as f:
            json.dump({"argv": sys.argv, "collections_and_seconds": _stats,
                       "tracked_objects": len(gc.get_objects())}, f)

    def _on_term(signum: int, frame: object) -> None:
        _dump()
        os._exit(0)

    gc.callbacks.append(_callback)
    if os.environ.get("GC_THRESH"):
        gc.set_threshold(*map(int, os.environ["GC_THRESH"].split(",")))
    atexit.register(_dump)
    signal.signal(signal.SIGTERM, _on_term)
