"""Shared pieces of the tests: the checkout, subprocess runners, random deform_conv2d calls, closeness checks
and W&B in offline mode."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


# Python source that makes `import segdcn._C` fail, as on a machine where the extension was never built.
HIDE_EXTENSION = """
import sys, importlib.abc

class NoExtension(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "segdcn._C":
            raise ImportError("segdcn._C hidden by the test")

sys.meta_path.insert(0, NoExtension())
"""


def run_without_extension(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh process in which segdcn._C cannot be imported."""
    return run_python("-c", HIDE_EXTENSION + code)


def run_python(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python *args` in a fresh process from the repository root, e.g. ("scripts/bench_ops.py", "--help")."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def load_script(name: str):
    """scripts/<name>.py as a module, to call its functions in this process (fast) after one real command line."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"scripts.{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def one_thread_env() -> dict[str, str]:
    """The environment of a training subprocess that is compared with another: scripts/compare_topologies.py's
    (segdcn importable, one thread as torchrun gives each of several workers, so that every run rounds alike)."""
    return load_script("compare_topologies").one_thread_env()


def logged_step(run_dir: Path) -> int:
    """The last step a run has written to metrics.jsonl so far (0 before the first)."""
    import json

    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return max((json.loads(line).get("step", 0) for line in lines if line.strip()), default=0)


@dataclass
class ConvCase:
    batch: int = 2
    in_channels: int = 4
    out_channels: int = 6
    height: int = 7
    width: int = 8
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    offset_groups: int = 1
    mask: bool = False
    bias: bool = True
    offsets: str = "normal"  # normal | far | integer | zero

    @property
    def out_size(self) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        return (
            (self.height + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
            (self.width + 2 * pw - dw * (kw - 1) - 1) // sw + 1,
        )

    def tensors(self, dtype=torch.float64, device="cpu", seed=0) -> dict:
        g = torch.Generator().manual_seed(seed)
        kh, kw = self.kernel
        oh, ow = self.out_size
        taps = self.offset_groups * kh * kw

        def randn(*shape):
            return torch.randn(*shape, generator=g, dtype=torch.float64)

        if self.offsets == "normal":
            offset = randn(self.batch, 2 * taps, oh, ow) * 1.5
        elif self.offsets == "far":  # most samples land well outside the image
            offset = randn(self.batch, 2 * taps, oh, ow) * 3 * max(self.height, self.width)
        elif self.offsets == "integer":  # exactly on pixel centres, including -1, H and W
            offset = torch.randint(-self.height - 1, self.height + 2, (self.batch, 2 * taps, oh, ow), generator=g)
        elif self.offsets == "zero":
            offset = torch.zeros(self.batch, 2 * taps, oh, ow)
        else:
            raise ValueError(self.offsets)
        out = {
            "input": randn(self.batch, self.in_channels, self.height, self.width),
            "offset": offset.double(),
            "weight": randn(self.out_channels, self.in_channels // self.groups, kh, kw),
            "bias": randn(self.out_channels) if self.bias else None,
            "mask": torch.rand(self.batch, taps, oh, ow, generator=g, dtype=torch.float64) if self.mask else None,
        }
        return {k: (v.to(dtype=dtype, device=device) if v is not None else None) for k, v in out.items()}

    def kwargs(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}


GRAD_NAMES = ("input", "offset", "weight", "bias", "mask")


def run(fn, case: ConvCase, tensors: dict, grad_output: torch.Tensor | None = None):
    """Output and the gradients of every tensor argument for <grad_output, fn(...)>."""
    leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in tensors.items()}
    out = fn(leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"], mask=leaves["mask"], **case.kwargs())
    if grad_output is None:
        grad_output = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    wanted = [k for k in GRAD_NAMES if leaves[k] is not None]
    grads = torch.autograd.grad(out, [leaves[k] for k in wanted], grad_output)
    return out.detach(), dict(zip(wanted, grads, strict=True)), grad_output


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, name: str = "") -> None:
    """max |actual - expected| <= tol * max(1, max |expected|): relative to the tensor's scale."""
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    if expected.numel() == 0:
        return
    scale = max(1.0, expected.abs().max().item())
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol * scale, f"{name}: max error {err:.3e} > {tol:.0e} x scale {scale:.3e}"


def offline_wandb(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """W&B offline and quiet, without system-stats sampling, its caches under `home`, and no server to reach
    (child processes inherit it)."""
    for var in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_ENTITY",
                "WANDB_PROJECT"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    # wandb exports its service's address once it runs; child processes of a test start their own.
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB__DISABLE_STATS", "true")
    # Were a run to go online, it would fail at once: no API key, and nothing listens at that address.
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
