"""The registry: names, tasks, errors with suggestions, argument validation."""

from __future__ import annotations

import pytest
from torch import nn

import visionzoo as vz
from visionzoo.errors import ModelArgumentError, UnknownModelError, VisionZooError
from visionzoo.registry import register_model


def test_list_models_sorted_and_filtered():
    names = vz.list_models()
    assert names == sorted(names)
    for expected in (
        "alexnet",
        "vgg16_bn",
        "googlenet",
        "resnet50",
        "mobilenet_v1",
        "mobilenet_v2",
    ):
        assert expected in names
    cls = vz.list_models(task="classification")
    assert set(cls) <= set(names) and "resnet18" in cls
    assert vz.list_models(task="detection") == [
        n for n in names if vz.get_model_entry(n).task == "detection"
    ]


def test_unknown_task_is_named():
    with pytest.raises(
        VisionZooError, match="unknown task 'clasification'.*did you mean classification"
    ):
        vz.list_models(task="clasification")


def test_unknown_model_suggests_close_names():
    with pytest.raises(
        UnknownModelError, match=r"unknown model 'resnett50' \(did you mean resnet50"
    ):
        vz.create_model("resnett50")
    with pytest.raises(UnknownModelError, match="visionzoo models"):
        vz.create_model("zzzzzz")


def test_unknown_argument_lists_valid_ones():
    with pytest.raises(
        ModelArgumentError, match="resnet18: .*'shortcutt'.*valid arguments: .*shortcut"
    ):
        vz.create_model("resnet18", shortcutt=False)


def test_duplicate_registration_rejected():
    vz.list_models()  # load the families first
    with pytest.raises(ValueError, match="registered twice"):

        @register_model("resnet18", task="classification", family="resnet")
        def _dup(**kwargs) -> nn.Module:
            return nn.Identity()


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("mobilenet_v2", {"width_mult": 0}, "width_mult"),
        ("mobilenet_v1", {"width_mult": -1.0}, "width_mult"),
        ("resnet18", {"num_classes": 0}, "num_classes"),
    ],
)
def test_invalid_values_raise_clear_errors(name, kwargs, match):
    with pytest.raises(ModelArgumentError, match=match):
        vz.create_model(name, **kwargs)
