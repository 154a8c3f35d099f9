"""Where a run computes and in which precision: the device, and whether bfloat16 autocast pays on it.

bf16 halves the bytes a step moves, but only hardware with bf16 arithmetic turns that into speed. On a CPU
without it the kernels emulate bf16: measured on an AMD EPYC (AVX2, no AVX-512 BF16), one 3x3 convolution
(64 x 96 x 14 x 14) took 1.08 s in bf16 against 0.040 s in fp32, 27x slower. So `precision="auto"` uses bf16
only where it is native: CUDA devices that support it, and CPUs with AVX-512 BF16 or AMX.
"""
from __future__ import annotations

import contextlib

import torch

from .errors import UserError
from .registry import Registry

PRECISIONS = Registry("precision")
PRECISIONS.add("auto", text="bf16 autocast where the hardware computes bf16 (CUDA with bf16, AVX-512 BF16 or AMX), else fp32")
PRECISIONS.add("bf16", text="bfloat16 autocast everywhere (emulated, and slow, on CPUs without bf16 units)")
PRECISIONS.add("fp16", text="float16 autocast with a gradient scaler (CUDA GPUs without bf16; what auto picks there)")
PRECISIONS.add("fp32", text="float32 throughout")
DEVICES = Registry("device")
DEVICES.add("auto", text="cuda if there is one, else mps, else cpu")
DEVICES.add("cpu", text="the CPU")
DEVICES.add("cuda", text="an NVIDIA GPU")
DEVICES.add("mps", text="Apple's Metal GPU")


def resolve_device(name: str) -> torch.device:
    DEVICES.check(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available() or name == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name} is not available on this machine; use --device cpu or auto.")
    return torch.device(name)


def native_bf16(device: torch.device | str) -> bool:
    """Does this device compute bfloat16 in hardware?"""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_bf16_supported()
    if kind == "cpu":
        if hasattr(torch.cpu, "get_capabilities"):  # torch >= 2.6
            caps = torch.cpu.get_capabilities()
            return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
        try:  # older torch on Linux: the kernel's CPU flags
            flags = open("/proc/cpuinfo").read().split()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def use_bf16(precision: str, device: torch.device | str) -> bool:
    """precision auto | bf16 | fp32 -> whether to run the network under bf16 autocast on `device`."""
    PRECISIONS.check(precision)
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def amp_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype a training run uses: bf16 as use_bf16 says; fp16 when asked, or (auto) on a CUDA GPU
    without bf16 (V100, T4), where a GradScaler guards its narrow range; None = fp32."""
    if use_bf16(precision, device):
        return torch.bfloat16
    kind = torch.device(device).type
    if precision == "fp16" and kind != "cuda":
        raise UserError("train.precision=fp16 needs a CUDA GPU (its gradient scaler); use auto, bf16 or fp32.")
    return torch.float16 if precision == "fp16" or (precision == "auto" and kind == "cuda") else None


def configure(device: torch.device) -> None:
    """Fast matmuls where they are safe for training: TF32 on CUDA (Ampere and newer), as DiT and EDM run."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device | str, bf16: bool | torch.dtype | None):
    """Autocast on `device` in bf16 (True or torch.bfloat16) or fp16 (torch.float16), else a no-op (fp32)."""
    if not bf16:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if bf16 is True else bf16
    return torch.autocast(torch.device(device).type, dtype)
