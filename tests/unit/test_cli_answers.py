"""What the CLI answers to a newcomer's mistakes: one line naming the field, and an exit code
that says which kind of answer it is (0 fits, 1 does not fit, 2 bad input, 3 unknown)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kiln.cli import main

from ..conftest import ROOT


def _write(tmp_path: Path, spec: dict, name: str = "svc.yaml") -> Path:
    manifest = {"apiVersion": "serving.kiln.dev/v1alpha1", "kind": "LLMService",
                "metadata": {"name": "svc", "namespace": "llm"}, "spec": spec}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(manifest))
    return path


LLAMA = {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"}


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("gpus", ["2", True, 2.5])
def test_gpus_of_the_wrong_type_is_refused_as_the_api_server_refuses_it(tmp_path, capsys, gpus):
    code, _, err = _run(capsys, "plan", "-f", str(_write(tmp_path, {"model": LLAMA, "gpus": gpus})))
    assert code == 2
    assert err.startswith("error: spec.gpus: Input should be a valid integer")
    assert len(err.splitlines()) == 1


def test_every_error_at_once_and_a_suggestion_for_a_typo(tmp_path, capsys):
    spec = {"model": {"sourse": LLAMA["source"]}, "gpus": "2", "engine": {"maxBachSize": 8}}
    code, _, err = _run(capsys, "plan", "-f", str(_write(tmp_path, spec)))
    assert code == 2
    assert len(err.splitlines()) == 1
    for part in ("spec.model.sourse: unknown field (did you mean source?)",
                 "spec.engine.maxBachSize: unknown field (did you mean maxBatchSize?)",
                 "spec.model.source: required field is missing",
                 "spec.gpus: Input should be a valid integer"):
        assert part in err


def test_a_model_outside_the_catalog_exits_3_verdict_unknown(tmp_path, capsys):
    path = _write(tmp_path, {"model": {"source": "hf://some-org/some-model"}})
    code, out, _ = _run(capsys, "plan", "-f", str(path))
    assert code == 3
    assert "verdict        unknown" in out
    assert "--model-config" in out


def test_a_hugging_face_web_address_gets_the_hf_form(tmp_path, capsys):
    path = _write(tmp_path, {"model": {"source": "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct"}})
    code, _, err = _run(capsys, "plan", "-f", str(path))
    assert code == 2
    assert err.strip().endswith("use hf://meta-llama/Llama-3.1-8B-Instruct")
    assert len(err) < 200


def test_a_precision_the_gpu_lacks_gets_the_nearest_one_that_fits(tmp_path, capsys):
    path = _write(tmp_path, {"model": LLAMA, "precision": "nvfp4", "gpu": {"type": "L4"}})
    code, out, _ = _run(capsys, "plan", "-f", str(path))
    assert code == 1
    hint = next(line for line in out.splitlines() if "would fit with" in line)
    suggested = hint.split("precision: ")[1].split()[0]
    assert suggested != "nvfp4"
    better = _write(tmp_path, {"model": LLAMA, "precision": suggested, "gpu": {"type": "L4"}}, "ok.yaml")
    assert _run(capsys, "plan", "-f", str(better))[0] == 0


def test_plot_into_a_missing_folder_is_refused_before_the_run(tmp_path, capsys):
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp_s,input_tokens,output_tokens\n0,100,10\n")
    service = ROOT / "examples" / "llama-3.1-8b-fp8.yaml"
    code, out, err = _run(capsys, "simulate", "-f", str(service), "--trace", str(trace),
                          "--plot", str(tmp_path / "missing" / "out.png"))
    assert code == 2
    assert err.strip() == f"error: --plot: folder {tmp_path / 'missing'} does not exist; " \
                          "create it or choose another path"
    assert out == ""  # refused before any policy ran


def test_run_without_a_cluster_says_how_to_point_at_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, _, err = _run(capsys, "run", "--metrics-port", "0")
    assert code == 2
    assert err.startswith("error: no cluster configured")
    assert "KUBECONFIG" in err and "kind create cluster" in err
    assert len(err.splitlines()) == 1


def test_a_lone_max_seq_len_carries_the_other_limits_with_it(tmp_path, capsys):
    path = _write(tmp_path, {"model": LLAMA, "engine": {"maxSeqLen": 2048}})
    code, out, err = _run(capsys, "render", "-f", str(path), "-o", "json")
    assert code == 0, err
    engine = next(o for o in json.loads(out)["items"] if o["kind"] == "LLMEngine")
    assert (engine["spec"]["limits"]["maxSeqLen"], engine["spec"]["limits"]["maxInputLen"]) == (2048, 2047)


def test_compare_blanks_what_does_not_fit_and_marks_a_batch_cap(tmp_path, capsys):
    path = _write(tmp_path, {"model": LLAMA, "precision": "fp8", "engine": {"maxBatchSize": 8}})
    code, out, _ = _run(capsys, "plan", "-f", str(path), "--compare")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line and not line.startswith("*")}
    header = out.splitlines()[1]
    kv_col, seqs_col = header.index("KV TOKENS"), header.index("SEQS")
    nvfp4 = rows["nvfp4"]  # no FP4 tensor cores on an H100
    assert nvfp4[kv_col:kv_col + 9].strip() == "" and nvfp4[seqs_col:seqs_col + 4].strip() == ""
    assert rows["fp8"][seqs_col:].split()[0] == "8*"
    assert "* capped by engine.maxBatchSize=8" in out
    code, out, _ = _run(capsys, "plan", "-f", str(path), "--compare", "-o", "json")
    by_precision = {r["precision"]: r for r in json.loads(out)["precisions"]}
    assert by_precision["nvfp4"]["kvCacheTokens"] is None
    assert by_precision["fp8"]["sequencesCappedByMaxBatchSize"] is True


@pytest.mark.parametrize("slots", ["0", "-2"])
def test_kiln_run_refuses_fewer_than_one_reconcile_in_flight_naming_the_flag(capsys, slots):
    assert main(["run", "--max-concurrent-reconciles", slots]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --max-concurrent-reconciles") and "Traceback" not in err


@pytest.mark.parametrize("tensor, said", [
    ("two", "must be an integer or 'auto' (got 'two')"),
    (0, "must be an integer of at least 1 or 'auto' (got 0)"),
    (65, "must be an integer of at most 64 or 'auto' (got 65)"),
])
def test_a_value_no_member_of_a_union_takes_is_one_problem_in_the_users_words(tmp_path, capsys, tensor, said):
    """Not one line per member of pydantic's union, named after its own types
    (``constrained-int``, ``literal['auto']``)."""
    code, _, err = _run(capsys, "plan", "-f", str(_write(tmp_path, {"model": LLAMA, "parallelism": {"tensor": tensor}})))
    assert code == 2 and err == f"error: spec.parallelism.tensor: {said}\n"


def test_gpus_the_model_cannot_be_split_over_name_the_counts_that_can(tmp_path, capsys):
    code, _, err = _run(capsys, "plan", "-f", str(_write(tmp_path, {"model": LLAMA, "gpus": 6})))
    assert code == 2
    assert err.startswith("error: spec.gpus: 6 GPUs cannot be split over this model") and err.endswith("; gpus: 4 or 8 can\n")


def test_run_refuses_one_port_for_metrics_and_health(capsys):
    code, _, err = _run(capsys, "run", "--metrics-port", "8080")
    assert code == 2 and err == "error: --metrics-port and --health-port are both 8080: give them two ports\n"


def test_run_takes_the_lease_it_is_named_and_refuses_a_name_kubernetes_would(capsys, monkeypatch):
    """Two releases of the chart in one namespace elect apart (--leader-election-name,
    test_chart_releases.py); without the flag the Lease is kiln-operator, as before."""
    import kiln.controller.operator as operator

    taken = []

    async def run_against_kubeconfig(*args, **kwargs):
        taken.append((kwargs["lease_namespace"], kwargs["lease_name"]))

    monkeypatch.setattr(operator, "run_against_kubeconfig", run_against_kubeconfig)
    assert main(["run", "--leader-election-namespace", "kiln-system", "--leader-election-name", "team-b-kiln-operator"]) == 0
    assert main(["run", "--leader-election-namespace", "kiln-system"]) == 0
    assert taken == [("kiln-system", "team-b-kiln-operator"), ("kiln-system", "kiln-operator")]
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--leader-election-name", "Team_B"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--leader-election-name" in err and "'Team_B' is not a DNS domain" in err and "Traceback" not in err
