"""`kiln simulate --plot`: what the figure shows a reader."""

from __future__ import annotations

from kiln.plot import plot_policies, policy_figure
from kiln.sim.engine import SimResult


def _result(replicas: list[int], p99: list[float]) -> SimResult:
    timeline = [(60.0 * (i + 1), n, 100, v / 2) for i, (n, v) in enumerate(zip(replicas, p99))]
    return SimResult(gpu_hours=1.0, slo_attainment=0.99, ttft_p50_ms=100, ttft_p99_ms=900,
                     tpot_p99_ms=20, scale_events=2, max_replicas=max(replicas), timeline=timeline,
                     ttft_p99_timeline=p99)


def test_figure_has_a_title_every_policy_p99_and_the_slo_in_the_legend(tmp_path):
    results = {"kiln": _result([1, 3, 2], [0.5, 3.0, 0.4]), "oracle": _result([1, 3, 2], [0.3, 0.6, 0.3]),
               "hpa": _result([1, 2, 5], [0.5, 9.0, 1.0]), "hpa-tuned": None,
               "static": _result([3, 3, 3], [0.2, 0.2, 0.2])}
    fig = policy_figure(results, slo_s=2.0, title="code trace")
    load, reps, ttft = fig.axes
    assert fig._suptitle.get_text() == "code trace"
    labels = [t.get_text() for t in reps.get_legend().get_texts()]
    assert set(labels) == {"kiln", "oracle", "hpa", "static", "hpa-tuned: no setting meets the SLO goal"}
    assert labels[-1] == "kiln"  # drawn last, on top of the others
    assert "SLO: p99 TTFT <= 2 s" in [t.get_text() for t in ttft.get_legend().get_texts()]
    assert "p99" in ttft.get_ylabel()
    kiln_line = next(line for line in ttft.get_lines() if line.get_label() == "kiln")
    assert list(kiln_line.get_ydata()) == [0.5, 3.0, 0.4]  # the p99, not the mean
    fig.canvas.draw()
    ticks = [t for t in reps.get_yticks() if reps.get_ylim()[0] <= t <= reps.get_ylim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    plot_policies(results, tmp_path / "out.png", 2.0)
    assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"
