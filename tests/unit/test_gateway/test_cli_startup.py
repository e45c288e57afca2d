"""``switchyard --help`` and the parser start without the app (issue 17: CLI help < 0.3 s).

The 0.3 s figure is measured in docs/performance.md; here the assertions are the cause (which
modules the parser imports) and a loose wall-clock bound that holds on a loaded machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("litestar", "aiohttp", "gateway.app", "backends.sim.server", "onnxruntime", "redis")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)


def test_building_the_parser_imports_none_of_the_app() -> None:
    done = _run("import json, sys\nfrom gateway.cli import build_parser\nbuild_parser()\n"
                "print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))")
    loaded = set(json.loads(done.stdout))
    assert not {m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY}, "the parser imported the app"


def test_gateway_package_names_load_on_use() -> None:
    done = _run("import sys, gateway\nbefore = 'gateway.app' in sys.modules\n"
                "from gateway import Settings, create_app\nprint(before, callable(create_app), Settings.__name__)")
    assert done.stdout.split() == ["False", "True", "Settings"]


def test_keys_commands_import_neither_the_document_nor_the_app() -> None:
    done = _run("import json, sys\nfrom gateway.cli import main\nmain(['keys', 'hash', 'abc'])\n"
                "print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))")
    digest, modules = done.stdout.splitlines()
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    loaded = set(json.loads(modules))
    assert "policies.document" not in loaded and "pydantic" not in loaded
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_switchyard_help_answers_within_a_second() -> None:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "--help"], capture_output=True, text=True,
                          timeout=60, check=True)
    elapsed = time.perf_counter() - started
    assert "serve" in done.stdout and "sim" in done.stdout
    assert elapsed < 1.0, f"switchyard --help took {elapsed:.2f} s"


def test_policy_check_reads_the_document_without_the_request_path() -> None:
    policy = Path(__file__).resolve().parents[3] / "examples" / "policy.yaml"
    done = _run(f"import json, sys\nfrom gateway.cli import main\nmain(['policy', 'check', {str(policy)!r}])\n"
                "print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))")
    report, modules = done.stdout.rsplit("\n", 2)[0], done.stdout.splitlines()[-1]
    assert "valid policy" in report
    loaded = set(json.loads(modules))
    heavy = {*HEAVY, "numpy", "httpx", "tiktoken", "policies.moderation.classifier", "policies.canary.controller",
             "asyncio", "ssl", "backends.discovery"}  # the discovery sources: ~40 ms of the 0.3 s
    assert not {m for m in loaded if m.split(".")[0] in heavy or m in heavy}, "policy check loaded the request path"
