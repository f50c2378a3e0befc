"""The device and the numeric precision a run uses: one home for trainer.device, device (eval, predict)
and the precision keys.

    device = resolve_device("auto", local_rank=0, key="trainer.device")
    check_precision_on(device, "bf16", key="trainer.precision")
"""

from __future__ import annotations

import torch

from segdcn.errors import ConfigError

# precision name -> autocast dtype (None: float32, no autocast)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, local_rank: int = 0, key: str = "device") -> torch.device:
    """auto (this process's GPU if there is one, else the CPU), cpu, cuda (this process's GPU), cuda:K."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"{key}={name!r}: expected auto, cpu, cuda or cuda:K") from error
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{key}={name!r}: expected auto, cpu, cuda or cuda:K")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}={name!r}: no CUDA device is available; expected cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def check_precision_on(device: torch.device, precision: str, key: str = "precision") -> None:
    """fp16 autocast (with its grad scaler) is for CUDA; the CPU has bf16."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{key}={precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"{key}=fp16: runs on CUDA only; expected bf16 or fp32 on the CPU")
