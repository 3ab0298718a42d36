"""The benchmark's figures: per test trace, GPU-hours against SLO attainment for every policy
and stock sweep point, with the SLO goal as a line."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["plot"]

LABELS = {"trainedStock": "hpa tuned on training", "kilnAfterAnHour": "kiln after an hour"}

STYLE = {"kiln": ("*", "tab:red", 160), "clairvoyant": ("D", "black", 60), "staticMin": ("s", "tab:gray", 60),
         "trainedStock": ("^", "tab:blue", 80), "kilnAfterAnHour": ("*", "tab:orange", 160)}


def plot(rows: list[dict], folder: Path, goal: float) -> list[Path]:
    """One PNG per row, named after its trace; returns the paths written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for row in rows:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for kind, color in (("hpa", "tab:blue"), ("keda", "tab:green")):
            pts = [p for p in row["stock"] if p["policy"] == kind]
            ax.scatter([p["gpuHours"] for p in pts], [100 * p["sloAttainment"] for p in pts], s=18,
                       color=color, alpha=0.7, label=f"{kind} sweep")
        # Kiln again on the same requests after an hour of the trace's traffic (generated traces).
        marks = {**row, "kilnAfterAnHour": (row.get("afterAnHour") or {}).get("kiln")}
        shown = [name for name in STYLE if marks.get(name)]
        for name in shown:
            marker, color, size = STYLE[name]
            ax.scatter([marks[name]["gpuHours"]], [100 * marks[name]["sloAttainment"]], marker=marker,
                       color=color, s=size, label=LABELS.get(name, name), zorder=3)
        ax.axhline(100 * goal, color="tab:red", lw=0.8, ls="--", label=f"SLO goal {goal:.0%}")
        points = [p["sloAttainment"] for p in row["stock"]] + [marks[n]["sloAttainment"] for n in shown]
        ax.set_ylim(max(50.0, 100 * min(points) - 2), 100.5)
        ax.set_title(f"{row['trace']}: GPU-hours against TTFT SLO attainment", fontsize=10)
        ax.set_xlabel("GPU-hours")
        ax.set_ylabel("requests within the TTFT SLO (%)")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path = folder / (re.sub(r"[^A-Za-z0-9.-]+", "_", row["trace"]) + ".png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written
