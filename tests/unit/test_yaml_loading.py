"""Hostile YAML through the real entry points (``kiln render``, ``kiln plan``, ``kiln demo``
and the Argo CD plugin): an alias bomb, deep nesting and huge numbers are refused in well
under a second with exit 2 and one short line naming the file, line, column and field; a
syntax error is ``file:line:column: ...``."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kiln.api.loading import MAX_BYTES, load_yaml
from kiln.cli import main as kiln_main
from kiln.errors import SpecInvalid

from ..conftest import ROOT

HEAD = "apiVersion: serving.kiln.dev/v1alpha1\nkind: LLMService\nmetadata: {name: bomb}\nspec:\n"
# About 600 bytes; 9^9 (387 million) strings once expanded, and its repr() is gigabytes.
ALIAS_BOMB = HEAD + """  model: {source: hf://meta-llama/Llama-3.1-8B-Instruct}
  gpus:
    - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    - &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    - &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    - &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    - &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    - &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    - &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    - &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    - [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""
CASES = {
    "alias bomb": (ALIAS_BOMB, r"service.yaml:1\d:\d+: spec\.gpus\[\d\]: more than 100000 values"),
    "50,000-deep flow nesting": (HEAD + "  gpus: " + "[" * 50_000 + "]" * 50_000,
                                 r"service.yaml:5:\d+: spec\.gpus.*: nested more than 64 levels deep"),
    "50,000-deep block nesting": (HEAD + "  gpus:\n  " + "- " * 50_000 + "1\n",
                                  r"service.yaml:6:\d+: spec\.gpus\[0\].*: nested more than 64 levels"),
    "5,000-digit number": (HEAD + "  model: {source: hf://a/b}\n  gpus: " + "9" * 5000 + "\n",
                           r"service.yaml:6:9: spec\.gpus: a number of 5000 characters \('9{20}\.\.\.'\)"),
    "5,000-digit float": (HEAD + "  engine:\n    kvCacheFreeGpuMemFraction: 0." + "1" * 5000 + "\n",
                          r"service.yaml:6:32: spec\.engine\.kvCacheFreeGpuMemFraction: a number of 5002"),
    "syntax error": (HEAD + "  model: {source: hf://a/b\n  gpus: 1\n",
                     r"service.yaml:6:7: not valid YAML: while parsing a flow mapping expected ',' or '}'"),
    "tab indentation": (HEAD + "\tgpus: 1\n", r"service.yaml:5:1: not valid YAML: .*'\\t'"),
    "over the size limit": (HEAD + "# " + "x" * MAX_BYTES + "\n", r"service.yaml: \d+ bytes, more than"),
}


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = kiln_main(argv)
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - started


@pytest.mark.parametrize("command", ["render", "plan"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_kiln_refuses_it_fast_on_one_short_line(tmp_path, command, case):
    text, expected = CASES[case]
    path = tmp_path / "service.yaml"
    path.write_text(text)
    code, out, err, seconds = _cli([command, "-f", str(path)])
    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith(f"error: {path}:") and len(line) < 300, line
    assert re.search(expected, line), line
    assert seconds < 0.5, f"{seconds:.2f}s"


def test_the_argo_cd_plugin_refuses_an_alias_bomb_fast(tmp_path):
    plugin = yaml.safe_load((ROOT / "gitops" / "argocd" / "cmp-plugin.yaml").read_text())
    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    started = time.perf_counter()
    result = subprocess.run(plugin["spec"]["generate"]["command"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    # A new interpreter imports Kiln first; the parse itself is milliseconds.
    assert time.perf_counter() - started < 10
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: bomb.yaml:") and "alias" in line and len(line) < 300, line


def test_kiln_demo_names_the_file_line_and_column_of_bad_yaml(tmp_path):
    (tmp_path / "a-good.yaml").write_text((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
    (tmp_path / "b-bad.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n")
    code, out, err, _ = _cli(["demo", "--examples", str(tmp_path), "--timeout", "5"])
    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith(f"error: {tmp_path / 'b-bad.yaml'}:5:1: not valid YAML"), line


def test_kiln_demo_in_process_gives_back_the_log_levels_it_quiets(tmp_path):
    (tmp_path / "bad.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n")
    loggers = [logging.getLogger(name) for name in ("kopf", "aiohttp")]
    before = [logger.level for logger in loggers]
    code, _, _, _ = _cli(["demo", "--examples", str(tmp_path), "--timeout", "5"])
    assert code == 2
    assert [logger.level for logger in loggers] == before


def test_a_long_value_is_quoted_short(tmp_path):
    path = tmp_path / "service.yaml"
    path.write_text(HEAD + "  model: {source: hf://a/b}\n  precision: '" + "x" * 100_000 + "'\n")
    code, _, err, _ = _cli(["render", "-f", str(path)])
    assert code == 2
    [line] = err.splitlines()
    assert line.startswith("error: spec.precision: ") and len(line) < 300, line


def test_ordinary_yaml_still_loads_with_anchors_and_several_documents():
    text = "a: &x {b: [1, 2.5, '3']}\nc: *x\n---\n---\nd: 10\n"
    assert load_yaml(text, "t.yaml") == [{"a": {"b": [1, 2.5, "3"]}, "c": {"b": [1, 2.5, "3"]}}, {"d": 10}]
    with pytest.raises(SpecInvalid, match=r"^t.yaml: not UTF-8 text"):
        load_yaml(b"a: \xff\n", "t.yaml")


@pytest.mark.parametrize("text, why", [
    ('{"num_hidden_layers": ' + "9" * 5000 + "}", "Exceeds the limit"),
    ("[" * 50_000 + "]" * 50_000, "nested too deep"),
    ('{"a": ', "Expecting value"),
])
def test_a_hostile_model_config_is_refused_on_one_line(tmp_path, text, why):
    (tmp_path / "config.json").write_text(text)
    path = tmp_path / "service.yaml"
    path.write_text((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
    code, _, err, seconds = _cli(["plan", "-f", str(path), "--model-config", str(tmp_path / "config.json")])
    assert code == 2
    [line] = err.splitlines()
    assert line.startswith(f"error: --model-config: {tmp_path / 'config.json'} is not valid JSON (")
    assert why in line and len(line) < 300 and seconds < 1, line
