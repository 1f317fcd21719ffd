"""``visionzoo models | summary | compare``, called in-process, plus one console-script run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from visionzoo.cli._common import format_switches, parse_model_spec, parse_switches
from visionzoo.cli.main import main
from visionzoo.errors import ConfigError


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_the_registry(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "task", "family", "paper"]
    row = next(line for line in lines if line.startswith("resnet50 "))
    assert row.split()[1:4] == ["classification", "resnet", "arXiv:1512.03385"]


def test_models_task_filter_and_json(capsys):
    code, out, _ = run_cli(capsys, "models", "--task", "classification", "--json")
    assert code == 0
    rows = json.loads(out)
    assert {r["task"] for r in rows} == {"classification"}
    assert "vgg16" in {r["name"] for r in rows}
    code, _, err = run_cli(capsys, "models", "--task", "clasification")
    assert code == 2
    assert "did you mean classification" in err


def test_summary_prints_the_profile(capsys):
    code, out, _ = run_cli(capsys, "summary", "resnet18", "--input-size", "3", "64", "64")
    assert code == 0
    assert "11,689,512" in out  # parameters
    assert "1x3x64x64" in out
    for stage in ("conv1", "layer1", "layer4", "fc"):
        assert any(line.split()[:1] == [stage] for line in out.splitlines())
    stride = next(line for line in out.splitlines() if line.startswith("output stride"))
    assert stride.split()[-1] == "32"


def test_summary_with_switches_and_json(capsys):
    code, out, _ = run_cli(
        capsys,
        "summary",
        "resnet50",
        "--input-size",
        "3",
        "64",
        "64",
        "--set",
        "stride_in_1x1=true",
        "--json",
    )
    assert code == 0
    d = json.loads(out)
    assert d["name"] == "resnet50:stride_in_1x1=true"
    assert d["flops"] == 2 * d["macs"]
    assert d["params"] == 25_557_032
    assert d["output_shape"] == [1, 1000]
    assert sum(r["macs"] for r in d["rows"]) == d["macs"]
    code, out, _ = run_cli(capsys, "summary", "resnet50", "--input-size", "3", "64", "64", "--json")
    assert json.loads(out)["macs"] > d["macs"]  # v1.5 strides the 3x3: more MACs than v1


def test_summary_unknown_model_suggests(capsys):
    code, out, err = run_cli(capsys, "summary", "resnett50")
    assert code == 2
    assert out == ""
    assert "did you mean resnet50" in err
    assert "Traceback" not in err


def test_summary_unknown_switch_names_it(capsys):
    code, _, err = run_cli(capsys, "summary", "resnet18", "--set", "foo=1")
    assert code == 2
    assert "'foo'" in err
    assert "shortcut" in err  # lists the valid switches


def test_summary_bad_switch_syntax(capsys):
    code, _, err = run_cli(capsys, "summary", "resnet18", "--set", "shortcut")
    assert code == 2
    assert "'shortcut'" in err and "key=value" in err


def test_summary_too_small_input_is_a_user_error(capsys):
    code, _, err = run_cli(capsys, "summary", "alexnet", "--input-size", "3", "16", "16")
    assert code == 2
    assert "alexnet cannot run on an input of size 1x3x16x16" in err


def test_compare_variants(capsys):
    code, out, _ = run_cli(
        capsys, "compare", "resnet18", "resnet18:shortcut=false", "--input-size", "3", "32", "32"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["model", "params", "M", "params", "GMACs"]
    rows = {line.split()[0]: line.split() for line in lines[2:] if line.strip()}
    assert set(rows) == {"resnet18", "resnet18:shortcut=false"}
    assert rows["resnet18"][1] == "11,689,512"
    assert rows["resnet18:shortcut=false"][1] != rows["resnet18"][1]


def test_compare_json_and_common_switches(capsys):
    code, out, _ = run_cli(
        capsys,
        "compare",
        "resnet18",
        "resnet34:num_classes=5",
        "--set",
        "num_classes=10",
        "--input-size",
        "3",
        "32",
        "32",
        "--json",
    )
    assert code == 0
    d = json.loads(out)
    assert [r["name"] for r in d] == ["resnet18", "resnet34:num_classes=5"]
    # --set applies to every model; inline switches win.
    assert [r["output_shape"] for r in d] == [[1, 10], [1, 5]]
    assert [r["switches"] for r in d] == [{"num_classes": 10}, {"num_classes": 5}]


def test_compare_errors(capsys):
    code, _, err = run_cli(capsys, "compare", "resnet18", "resnt18:shortcut=false")
    assert code == 2 and "did you mean resnet18" in err
    code, _, err = run_cli(capsys, "compare", "resnet18:bogus=true")
    assert code == 2 and "'bogus'" in err
    code, _, err = run_cli(capsys, "compare", ":shortcut=false")
    assert code == 2 and "NAME:key=value" in err


def test_compare_help_documents_inline_switches(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "NAME:KEY=VALUE,KEY=VALUE" in out
    assert "resnet50:stride_in_1x1=true" in out


def test_switch_parsing():
    assert parse_switches(["a=true", "b=0.5", "c=[6, 12]", "d=none_of_yaml", "e=null"]) == {
        "a": True,
        "b": 0.5,
        "c": [6, 12],
        "d": "none_of_yaml",
        "e": None,
    }
    assert parse_model_spec("deeplab:rates=[6,12,18],pool=false") == (
        "deeplab",
        {"rates": [6, 12, 18], "pool": False},
    )
    assert parse_model_spec("resnet50") == ("resnet50", {})
    assert (
        format_switches({"shortcut": False, "width_mult": 0.5}) == "shortcut=false,width_mult=0.5"
    )
    with pytest.raises(ConfigError, match="'=1'"):
        parse_switches(["=1"])


def _console_script() -> str:
    found = shutil.which("visionzoo")
    if found:
        return found
    return str(Path(sys.executable).parent / "visionzoo")


def test_console_script_runs():
    # One subprocess (import torch dominates its time): the installed entry point reaches
    # main() and turns a user error into exit status 2 with a one-line message.
    script = _console_script()
    assert os.access(script, os.X_OK), f"visionzoo console script not found at {script}"
    proc = subprocess.run(
        [script, "summary", "resnett50"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1  # a message, not a traceback
    assert lines[0].startswith(
        "visionzoo summary: error: unknown model 'resnett50' (did you mean resnet50"
    )
