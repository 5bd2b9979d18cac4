"""Seeding, device and dtype choice. torch is imported inside the functions so that the command
line's ``--help`` (which imports the core layer) stays instant."""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

_DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run repeats."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def choose_device(requested: str | None = None) -> torch.device:
    """``requested`` if given (``cpu``, ``cuda``, ``cuda:1``, ``mps``), else cuda when present, else cpu."""
    import torch

    if requested and requested != "auto":
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise ConfigError(f"unknown device {requested!r}; use cpu, cuda, cuda:N or auto") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {requested!r} asked for but CUDA is not available; use --device cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bfloat16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_dtype(device: torch.device | str, requested: str | torch.dtype | None = None) -> torch.dtype:
    """The compute dtype: ``requested`` if given; else bf16 on CUDA with bf16 support and on CPUs with
    native bf16, float32 otherwise. ``PARETOALIGN_DTYPE`` overrides the automatic choice."""
    import torch

    requested = requested or os.environ.get("PARETOALIGN_DTYPE") or "auto"
    if isinstance(requested, torch.dtype):
        return requested
    if requested != "auto":
        if requested not in _DTYPE_NAMES:
            raise ConfigError(f"unknown dtype {requested!r}; use one of auto, {', '.join(_DTYPE_NAMES)}")
        return getattr(torch, _DTYPE_NAMES[requested])
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return torch.float32


def autocast_precision(device: str | None = None, requested: str = "auto") -> str:
    """Training autocast for accelerate (``bf16`` / ``fp16`` / ``no``): ``requested`` unless ``auto``, else
    what the device computes fast (bf16 on CPUs with AVX-512 BF16 or AMX: about twice float32 for a LoRA
    step of the default model, measured here)."""
    import torch

    if requested != "auto":
        return requested
    dtype = choose_dtype(choose_device(device))
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")
