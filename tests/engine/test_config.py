"""Typed configs: YAML recipes, dotted overrides, and the errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from visionzoo.engine.config import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from visionzoo.engine.recipes import list_recipes, resolve_recipe
from visionzoo.errors import ConfigError


def test_overrides_types_and_shorthands():
    cfg = load_config(
        None,
        [
            "optim.lr=0.05",
            "data=digits",
            "model=vgg11",
            "model.args.batch_norm=true",
            "trainer.clip_grad_norm=1",
            "sched.milestones=[2, 4]",
            "trainer.max_steps=null",
        ],
    )
    assert cfg.optim.lr == 0.05 and isinstance(cfg.optim.lr, float)
    assert cfg.data.name == "digits" and cfg.model.name == "vgg11"
    assert cfg.model.args == {"batch_norm": True}
    assert cfg.trainer.clip_grad_norm == 1.0
    assert cfg.sched.milestones == [2.0, 4.0]
    assert cfg.trainer.max_steps is None
    # YAML reads "3e-4" as a string; a float key still takes it.
    assert apply_overrides(cfg, ["optim.lr=3e-4"]).optim.lr == 3e-4


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (
            "optim.lrr=1",
            r"unknown config key 'optim.lrr' \(did you mean lr\?\); valid keys here: name, lr",
        ),
        ("foo=1", "unknown config key 'foo'.*valid keys here: model, data"),
        ("data.batch_size=abc", "data.batch_size: expected an integer, got 'abc'"),
        ("trainer.channels_last=3", "trainer.channels_last: expected true or false"),
        ("optim.lr", "not of the form key=value"),
        ("sched.milestones=5", "sched.milestones: expected a list"),
    ],
)
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(config_from_dict({}), [override])


def test_yaml_round_trip(tmp_path):
    cfg = load_config(None, ["optim.lr=0.01", "model.args.shortcut=false"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"optim": {"learning_rate": 0.1}}))
    with pytest.raises(
        ConfigError, match=r"unknown.yaml: unknown config key 'optim.learning_rate'"
    ):
        load_config(unknown)


def test_shipped_recipes_load():
    names = list_recipes()
    assert "default" in names
    for name in names:
        load_config(resolve_recipe(name))
    with pytest.raises(ConfigError, match="unknown recipe 'defualt' \\(did you mean default"):
        resolve_recipe("defualt")
