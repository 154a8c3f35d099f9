"""device.py: bf16 autocast only where the hardware computes it."""
from __future__ import annotations

import pytest

from tinydiffusion.errors import UserError


def test_precision_auto_uses_bf16_only_where_the_hardware_has_it(monkeypatch):
    from tinydiffusion import device
    from tinydiffusion.config import Config

    assert device.use_bf16("fp32", "cpu") is False and device.use_bf16("bf16", "cpu") is True
    for native in (False, True):
        monkeypatch.setattr(device, "native_bf16", lambda dev, native=native: native)
        assert device.use_bf16("auto", "cpu") is native
    with pytest.raises(UserError, match="precision"):
        device.use_bf16("fp8", "cpu")
    # Runs written before train.precision existed said train.bf16: true -> auto, false -> fp32.
    assert Config.from_dict({"train": {"bf16": True}}).train.precision == "auto"
    assert Config.from_dict({"train": {"bf16": False}}).train.precision == "fp32"
