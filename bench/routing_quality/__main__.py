"""``python -m bench.routing_quality [--data ../shared/data] [--latency] [--model FILE]``.

Quality (default): scores the classifier and the baselines (random, prompt length) on the dev
split of every routing set with per-model correctness or scores, prints the Markdown table
(APGR, CPT(50%), CPT(80%)), writes ``bench/routing_quality/results.json`` and draws the
cost-quality curves into ``docs/img/routing_quality.png``.

Latency (``--latency``): p50/p99 per decision on one core for 50-, 500- and 2000-token
prompts, with the cost of tokenizing the same text as the baseline; merged into the JSON.

Compare (``--compare OLD.onnx``): the model against another file on the same rows, with a
paired bootstrap of the APGR difference per set (printed only).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

from router.difficulty import DifficultyClassifier

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results.json"
PNG = REPO / "docs" / "img" / "routing_quality.png"


def _load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_quality(args: argparse.Namespace, classifier: DifficultyClassifier) -> dict[str, Any]:
    from bench.routing_quality.evaluate import (
        ROUTERS,
        evaluate,
        mean_apgr,
        render_table,
    )
    from bench.routing_quality.plot import plot_curves

    if not (args.data / "route_routellm_mmlu").is_dir():
        sys.exit(f"{args.data} does not hold the routing sets (route_*/train.jsonl.gz); pass --data")
    results = evaluate(args.data, classifier, bootstrap=args.bootstrap)
    print(render_table(results))
    print("\n* never trained on: evaluated on the whole set, not only the dev split")
    means = {router: round(mean_apgr(results, router), 4) for router in ROUTERS}
    plot_curves(results, args.png, title=f"Difficulty classifier {classifier.version}: cost-quality "
                f"curves (mean APGR {means['model']:.3f}; random 0.5, length {means['length']:.3f})")
    print(f"\nwrote {args.png}")
    return {"model": classifier.version, "family": classifier.family, "mean_apgr": means,
            "sets": {r.name: r.as_json() for r in results}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_quality", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--model", type=Path, default=None, help="ONNX file (default: the shipped one)")
    parser.add_argument("--latency", action="store_true", help="measure latency instead of quality")
    parser.add_argument("--compare", type=Path, default=None, metavar="OLD.onnx",
                        help="compare the model with another file, paired, on the same rows")
    parser.add_argument("--runs", type=int, default=5000, help="latency: calls per measurement")
    parser.add_argument("--bootstrap", type=int, default=500, help="quality: bootstrap resamples")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--png", type=Path, default=PNG)
    args = parser.parse_args(argv)

    classifier = DifficultyClassifier.load(args.model)
    if args.compare is not None:
        from bench.routing_quality.evaluate import compare

        print(compare(args.data, classifier, DifficultyClassifier.load(args.compare), draws=args.bootstrap))
        return 0
    saved = _load_results(args.json)
    if args.latency:
        from bench.routing_quality.latency import measure, render_latency

        saved["latency"] = {**measure(classifier, runs=args.runs), "python": platform.python_version(),
                            "machine": platform.machine()}
        print(render_latency(saved["latency"]))
    else:
        saved["quality"] = run_quality(args, classifier)
    args.json.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
