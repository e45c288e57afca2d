"""Draw the cost-quality curves: one panel per set, the model against the baselines."""

from __future__ import annotations

import math
from pathlib import Path

from bench.routing_quality.evaluate import SetResult

COLOURS = {"model": "#1f6fb4", "length": "#e08a1e", "random": "#888888"}
LABELS = {"model": "classifier", "length": "by prompt length", "random": "random"}


def plot_curves(results: list[SetResult], path: Path, *, title: str) -> None:
    """Routed quality against strong-call share for every set, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    for ax, r in zip(axes.flat, results):
        for router in ("random", "length", "model"):
            curve = r.curves[router]
            apgr = r.scores[router].apgr
            ax.plot(curve.strong_share * 100, curve.quality, color=COLOURS[router],
                    lw=2.2 if router == "model" else 1.4, ls="--" if router == "random" else "-",
                    label=f"{LABELS[router]} (APGR {apgr:.2f})")
        ax.axhline(r.strong_quality, color="#2a9d4b", lw=0.8, ls=":", label="all strong")
        ax.axhline(r.cheap_quality, color="#c0392b", lw=0.8, ls=":", label="all cheap")
        suffix = "whole set, never trained on" if r.role == "eval_only" else "dev split"
        ax.set_title(f"{r.name}\n({suffix}, n={r.n})", fontsize=10)
        ax.set_xlabel("calls sent to the strong model (%)")
        ax.set_ylabel("quality of routed answers")
        ax.set_xlim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="lower right")
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
