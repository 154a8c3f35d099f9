"""config.py: typed --set overrides, presets that are all valid, config.json round trips."""
from __future__ import annotations

import json

import pytest

from tinydiffusion.config import PRESETS, apply_overrides, get_preset, load_config
from tinydiffusion.errors import UserError
from tinydiffusion.train import check_config


def test_overrides_are_parsed_by_the_field_type():
    cfg = apply_overrides(get_preset("mnist"), ["train.lr=1e-3", "model.channels=48", "train.ema_warmup=no",
                                                "model.attention_resolutions=(7,14)", "model.dropout=none", "seed=3"])
    assert cfg.train.lr == 1e-3 and cfg.model.channels == 48 and cfg.train.ema_warmup is False
    assert cfg.model.attention_resolutions == (7, 14) and cfg.model.dropout is None and cfg.seed == 3


@pytest.mark.parametrize("item, message", [("train.lr", "key=value"), ("training.lr=1", "unknown section"),
                                           ("train.rate=1", "has no key 'rate'"), ("train.steps=many", "type int"),
                                           ("train.ema_warmup=maybe", "type bool")])
def test_bad_overrides_are_one_sentence(item, message):
    with pytest.raises(UserError, match=message):
        apply_overrides(get_preset("mnist"), [item])


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_names_registered_things_and_round_trips_through_json(name, tmp_path):
    cfg = get_preset(name)
    check_config(cfg)
    (tmp_path / "config.json").write_text(cfg.to_json())
    assert load_config(tmp_path / "config.json") == cfg


def test_a_damaged_or_missing_config_json_is_one_sentence(tmp_path):
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_config(tmp_path / "config.json")
    (tmp_path / "config.json").write_text(json.dumps({"train": {"no_such_key": 1}, "sample": {"steps": 10}}))
    assert load_config(tmp_path / "config.json").sample.steps == 10  # keys of other versions are ignored
    with pytest.raises(UserError, match="No config.json"):
        load_config(tmp_path / "missing" / "config.json")
