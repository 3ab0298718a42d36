"""The benchmark's figure: per test trace, GPU-hours against SLO attainment for every policy
and stock sweep point, with the SLO goal as a line."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["plot"]

STYLE = {"kiln": ("*", "tab:red", 160), "clairvoyant": ("D", "black", 60), "staticMin": ("s", "tab:gray", 60)}


def plot(rows: list[dict], out: Path, goal: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    fig, axes = plt.subplots(math.ceil(len(rows) / cols), cols, figsize=(16, 3.2 * math.ceil(len(rows) / cols)),
                             squeeze=False)
    for ax, row in zip(axes.flat, rows):
        for kind, color in (("hpa", "tab:blue"), ("keda", "tab:green")):
            pts = [p for p in row["stock"] if p["policy"] == kind]
            ax.scatter([p["gpuHours"] for p in pts], [100 * p["sloAttainment"] for p in pts], s=14,
                       color=color, alpha=0.6, label=f"{kind} sweep")
        for name, (marker, color, size) in STYLE.items():
            ax.scatter([row[name]["gpuHours"]], [100 * row[name]["sloAttainment"]], marker=marker,
                       color=color, s=size, label=name, zorder=3)
        ax.axhline(100 * goal, color="tab:red", lw=0.8, ls="--")
        points = [p["sloAttainment"] for p in row["stock"]] + [row[n]["sloAttainment"] for n in STYLE]
        ax.set_ylim(max(50.0, 100 * min(points) - 2), 100.5)
        ax.set_title(row["trace"], fontsize=9)
        ax.set_xlabel("GPU-hours", fontsize=8)
        ax.set_ylabel("TTFT SLO met (%)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=5, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(out, dpi=80)
