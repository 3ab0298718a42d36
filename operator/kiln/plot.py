"""``kiln simulate --plot``: load, replicas and time to first token over a trace, per policy.

matplotlib is an optional dependency (``pip install 'kiln-operator[plot]'``):
:func:`check_plot_target` says so, and checks the folder, before a run that can take minutes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import SpecInvalid

__all__ = ["check_plot_target", "policy_figure", "plot_policies", "PLOT_FORMATS"]

# What --plot writes: the formats matplotlib writes without an extra backend.
PLOT_FORMATS = (".png", ".svg", ".pdf")

# Drawn bottom to top; kiln last so that no other policy hides it. The oracle is wide and
# dashed, so that a policy drawn over it still lets it show at its edges.
_ORDER = ("oracle", "static", "hpa", "hpa-tuned", "kpa", "kiln")
_STYLE: dict[str, dict[str, Any]] = {
    "oracle": {"color": "black", "linestyle": "--", "linewidth": 3.0, "alpha": 0.5},
    "static": {"color": "tab:gray", "linestyle": ":", "linewidth": 1.5},
    "hpa": {"color": "tab:orange", "linewidth": 1.2},
    "hpa-tuned": {"color": "tab:purple", "linestyle": "-.", "linewidth": 1.2},
    "kpa": {"color": "tab:green", "linewidth": 1.2},
    "kiln": {"color": "tab:blue", "linewidth": 2.5},
}


def check_plot_target(path: Path) -> None:
    """Refuse, before any work, a plot that could not be written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SpecInvalid("--plot needs matplotlib (pip install 'kiln-operator[plot]')") from None
    folder = path.parent
    if not folder.is_dir():
        raise SpecInvalid(f"--plot: folder {folder} does not exist; create it or choose another path")
    if path.is_dir():
        raise SpecInvalid(f"--plot: {path} is a folder; name the image to write in it, e.g. {path / 'replay.png'}")
    if path.suffix.lower() not in PLOT_FORMATS:
        raise SpecInvalid(f"--plot: {path.name}: name a PNG (.png), SVG (.svg) or PDF (.pdf) file")
    # Whether the file can be written, found by writing it (permissions say nothing to root,
    # nor of a read-only or virtual file system); an empty file made here is removed.
    existed = path.exists()
    try:
        with path.open("ab"):
            pass
    except OSError as error:
        raise SpecInvalid(f"--plot: cannot write {path}: {error.strerror}") from None
    if not existed:
        path.unlink(missing_ok=True)


def plot_policies(results: dict[str, Any], path: Path, slo_s: float | None = None,
                  title: str = "Autoscaling policies on a trace") -> None:
    """Write :func:`policy_figure` to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = policy_figure(results, slo_s, title)
    fig.savefig(path)
    plt.close(fig)


def policy_figure(results: dict[str, Any], slo_s: float | None = None,
                  title: str = "Autoscaling policies on a trace") -> Any:
    """Three panels sharing the time axis: arrivals, replicas and p99 TTFT per minute.

    ``results`` maps a policy to its :class:`kiln.sim.SimResult`, or to None when it has
    nothing to show (``hpa-tuned`` when no swept target meets the SLO goal): that policy
    still gets a legend entry saying so."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (load, reps, ttft) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    fig.suptitle(title)
    drawn = [r for r in results.values() if r is not None]
    if drawn:
        first = drawn[0]
        load.plot([t / 60 for t, *_ in first.timeline], [a for _, _, a, _ in first.timeline],
                  color="grey")
    load.set_ylabel("arrivals / min")
    names = sorted(results, key=lambda n: _ORDER.index(n) if n in _ORDER else len(_ORDER))
    for name in names:
        result, style = results[name], _STYLE.get(name, {"linewidth": 1.2})
        if result is None:
            reps.plot([], [], label=f"{name}: no setting meets the SLO goal", **style)
            continue
        minutes = [t / 60 for t, *_ in result.timeline]
        reps.step(minutes, [n for _, n, _, _ in result.timeline], where="post", label=name, **style)
        p99 = result.ttft_p99_timeline or [m for *_, m in result.timeline]
        # Log scale: a minute without requests is drawn at 10 ms rather than dropped.
        ttft.plot(minutes, [max(v, 0.01) for v in p99], label=name, **style)
    reps.set_ylabel("replicas")
    reps.yaxis.set_major_locator(MaxNLocator(integer=True))
    reps.legend(loc="upper left", fontsize="small")
    if slo_s:
        ttft.axhline(slo_s, color="red", linestyle="--", linewidth=1,
                     label=f"SLO: p99 TTFT <= {slo_s:g} s")
    ttft.set_yscale("log")
    ttft.set_ylabel("p99 TTFT per minute (s, log)")
    ttft.set_xlabel("minutes")
    ttft.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig
