"""``python -m bench.moderation [--data ../shared/data] [--cost-only | --quality-only] [--classifier cascade]``.

Quality (needs ``shared/data``): per-category precision, recall, F1 and AUPRC on the dev split
at the model's thresholds, false-positive rates on benign sets (routing prompts, XSTest safe
prompts and completions), PII recall and precision per type on the Presidio synthetic set.
Cost (no data needed): added inter-token latency p50/p99 of ``StreamModerator.feed`` on a
500-token stream in ~4-character chunks against a pass-through baseline in the same run, and
CPU per 1,000 moderated tokens. ``--classifier cascade`` measures the cascade instead (its running
scorer as the gateway gives it). Prints Markdown tables and writes ``bench/moderation/results.json``
(``results-cascade.json`` for the cascade).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from bench.moderation.cost import measure, render
from policies.moderation import ModerationClassifier
from policies.moderation.scorers import ModerationModels

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.moderation", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--model", type=Path, default=None, help="ONNX file (default: the shipped one)")
    parser.add_argument("--cost-only", action="store_true", help="skip the quality part (no data needed)")
    parser.add_argument("--quality-only", action="store_true", help="skip the cost part")
    parser.add_argument("--streams", type=int, default=200, help="cost: streams timed")
    parser.add_argument("--window-chars", type=int, default=160)
    parser.add_argument("--mode", choices=["incremental", "buffered", "async"], default="incremental",
                        help="cost: the stream mode measured")
    parser.add_argument("--core", type=int, default=0, help="cost: CPU core to pin to (-1: no pinning)")
    parser.add_argument("--classifier", choices=["ngrams", "cascade"], default="ngrams",
                        help="moderation.classifier: the n-gram model, or the cascade (needs the cascade extra)")
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default: results.json, or results-cascade.json for the cascade)")
    args = parser.parse_args(argv)
    args.json = args.json or (RESULTS if args.classifier == "ngrams" else HERE / "results-cascade.json")

    models = ModerationModels(ModerationClassifier.load(args.model))
    classifier = models.get(args.classifier)
    results = json.loads(args.json.read_text()) if args.json.is_file() else {}
    results["model"] = getattr(classifier, "version", args.classifier)
    if not args.cost_only:
        if not (args.data / "pii_presidio_synth").is_dir():
            parser.error(f"{args.data} does not hold the shared data sets; pass --data or --cost-only")
        from bench.moderation.quality import (
            classifier_quality,
            pii_quality,
            render_classifier,
            render_pii,
        )

        results["classifier"] = classifier_quality(classifier, args.data)
        thresholds = classifier.thresholds
        results["thresholds"] = thresholds
        print(render_classifier(results["classifier"], thresholds), end="\n\n")
        results["pii"] = pii_quality(args.data)
        print(render_pii(results["pii"]), end="\n\n")
    if not args.quality_only:
        results["cost"] = {**measure(classifier, streams=args.streams, window_chars=args.window_chars,
                                           core=None if args.core < 0 else args.core, mode=args.mode,
                                           running=models.running(args.classifier)),
                           "python": platform.python_version(), "machine": platform.machine()}
        print(render(results["cost"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
