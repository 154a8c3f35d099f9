"""checkpoint.py: config.json pins every size of the network, so old runs rebuild the same net."""
from __future__ import annotations

import json

import torch


def test_config_json_pins_the_network_so_registry_changes_do_not_break_old_runs(tiny_run, monkeypatch):
    from functools import partial

    from tinydiffusion import models
    from tinydiffusion.models.unet import UNet
    from tinydiffusion.runs import load_run

    saved = json.loads((tiny_run / "config.json").read_text())["model"]
    assert saved["name"] == "unet-small" and saved["channels"] == 8  # the tiny config's override
    assert saved["channel_mult"] == [1, 2, 2] and saved["num_res_blocks"] == 1 and saved["attention_resolutions"] == [7]
    monkeypatch.setitem(models.MODELS._entries, "unet-small", partial(UNet, channels=48, channel_mult=(1, 2), num_res_blocks=2))
    _, net, _, _ = load_run(tiny_run)  # rebuilt from config.json, not from the changed registry
    assert net(torch.zeros(2, 1, 28, 28), torch.rand(2)).shape == (2, 1, 28, 28)
