"""The typed config tree: dicts, YAML files and a.b=c overrides, validated with clear errors."""

from __future__ import annotations

import pytest

from smoltolk.config import apply_overrides, from_dict, load_config, to_dict
from smoltolk.errors import ConfigError
from smoltolk.model.config import ModelConfig


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("backbone:\n  num_layers: 6\nspeech:\n  pooling: fixed\n")
    cfg = load_config(ModelConfig, path, ["speech.entropy_beta=0", "backbone.rope_theta=5e5",
                                          "speech.rope_theta=null"])
    assert cfg.backbone.num_layers == 6 and cfg.speech.pooling == "fixed"
    assert cfg.backbone.rope_theta == 500000.0 and cfg.speech.rope_theta is None
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, match", [
    ("speech.poolin=fixed", r"unknown key\(s\) \['poolin'\]"),
    ("speech.pooling=mean", r"speech.pooling: expected one of \['dynamic', 'fixed', 'last'\]"),
    ("backbone.num_layers=six", "backbone.num_layers: expected an integer"),
    ("backbone.num_heads=5", r"num_heads \(5\) must be a multiple of backbone.num_kv_heads \(3\)"),
    ("speech.entropy_beta=-1", "entropy_beta must be >= 0"),
    ("speech.residual", "expected the form key.subkey=value"),
])
def test_bad_values_are_named(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(ModelConfig, None, [override])


def test_enum_values_are_checked_without_the_loader():
    from smoltolk.model.config import BackboneConfig, SpeechConfig

    with pytest.raises(ConfigError, match="speech.pooling must be"):
        SpeechConfig(pooling="mean")
    with pytest.raises(ConfigError, match="backbone.rope_type must be"):
        BackboneConfig(rope_type="yarn")


def test_entropy_needs_dynamic_pooling():
    with pytest.raises(ConfigError, match="entropy_beta > 0 needs speech.pooling=dynamic"):
        load_config(ModelConfig, None, ["speech.pooling=last", "speech.entropy_beta=0.01"])


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("speech: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(ModelConfig, path)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(ModelConfig, tmp_path / "absent.yaml")


def test_overrides_do_not_mutate_their_input():
    data = {"speech": {"pooling": "fixed"}}
    out = apply_overrides(data, ["speech.pooling=last"])
    assert data["speech"]["pooling"] == "fixed" and out["speech"]["pooling"] == "last"


def test_recipes_inherit_from_a_base(tmp_path):
    (tmp_path / "base.yaml").write_text("backbone:\n  num_layers: 6\n  hidden_size: 144\nspeech:\n  pooling: fixed\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nbackbone:\n  num_layers: 8\n")
    cfg = load_config(ModelConfig, tmp_path / "child.yaml")
    assert cfg.backbone.num_layers == 8 and cfg.backbone.hidden_size == 144 and cfg.speech.pooling == "fixed"
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(ModelConfig, tmp_path / "loop.yaml")
