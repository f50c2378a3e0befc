#!/usr/bin/env python
"""Times deform_conv2d (segdcn, torchvision, onnxruntime) against F.conv2d of the same shape.

All implementations run in one process on the same tensors, so the printed ratios compare
like with like on this machine; F.conv2d has the same groups. Shapes are DeepLab's: res5
(512->512, 3x3, dilation 2, at output stride 16 and 8 for a 513x513 crop) and a res4-like layer
(256->256, dilation 1); the demo's small maps (res5 on 8x8, res4 on 16x16, batch 16); and
depthwise and grouped layers (groups = channels with 1-8 offset groups, groups = 32), the
building block of DCNv3-style designs. Each kind of shape has its own targets (TARGETS).

    python scripts/bench_ops.py                      # the default shapes, all threads
    python scripts/bench_ops.py --threads 1,2        # the same at 1 and 2 threads
    python scripts/bench_ops.py --shapes 1x64x17x2 --repeat 3 --json out.json
    python scripts/bench_ops.py --shapes 2x256x65x1x256x8   # depthwise, 8 offset groups
    python scripts/bench_ops.py --roi                # also deform_roi_pool against roi_align
    python scripts/bench_ops.py --roi-only           # only that table
    python scripts/bench_ops.py --device cuda        # segdcn, torchvision and cuDNN's conv on a GPU,
                                                     # float32, float16 and bfloat16, with peak memory
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
import torchvision.ops

import segdcn.ops
from segdcn.engine.device import resolve_device
from segdcn.errors import ConfigError
from segdcn.ops.onnx import OrtDeformConv
from segdcn.provenance import Transcript, add_results_argument, provenance, tool_argv, write_results

SHAPE_SYNTAX = "NxCxSIZExDILATION[xGROUPS[xOFFSET_GROUPS]]"


@dataclass(frozen=True)
class Shape:
    batch: int
    channels: int
    size: int
    dilation: int
    groups: int = 1
    offset_groups: int = 1

    @classmethod
    def parse(cls, text: str) -> Shape:
        example = "e.g. 2x512x65x2, or 2x256x65x1x256x8 for depthwise with 8 offset groups"
        try:
            values = [int(v) for v in text.lower().split("x")]
        except ValueError:
            values = []
        if not 4 <= len(values) <= 6 or min(values) < 1:
            raise argparse.ArgumentTypeError(
                f"a shape is {SHAPE_SYNTAX} of positive integers ({example}), got {text!r}"
            )
        shape = cls(*values)
        if shape.channels % shape.groups or shape.channels % shape.offset_groups:
            raise argparse.ArgumentTypeError(
                f"GROUPS ({shape.groups}) and OFFSET_GROUPS ({shape.offset_groups}) must divide the "
                f"channels ({shape.channels}), got {text!r}"
            )
        return shape

    @property
    def kind(self) -> str:
        """Which targets apply: depthwise (groups = channels), grouped, small map (<= 16x16) or dense."""
        if self.groups == self.channels and self.channels > 1:
            return "depthwise"
        if self.groups > 1:
            return "grouped"
        return "small map" if self.size <= 16 else "dense"

    def __str__(self) -> str:
        text = f"N={self.batch} {self.channels}->{self.channels} {self.size}x{self.size} d={self.dilation}"
        if self.groups > 1:
            text += f" g={self.groups}"
        if self.offset_groups > 1:
            text += f" og={self.offset_groups}"
        return text


DENSE_SHAPES = [Shape(n, 512, s, 2) for n in (1, 2) for s in (33, 65)] + [Shape(n, 256, 65, 1) for n in (1, 2)]
# issue 22's regimes: the demo's res5 (8x8, dilation 4) and res4 (16x16, dilation 2) at its batch of 16;
# depthwise with 1 and 8 offset groups, and a 33x33 map with 4; grouped with 32, 8 and 4 groups (8, 32
# and 64 channels each: the direct plan, and the im2col plan on either side of MKL's and the panels' reach)
SMALL_SHAPES = [Shape(16, 128, 8, 4), Shape(16, 64, 16, 2)]
GROUPED_SHAPES = [Shape(2, 256, 65, 1, 256, 1), Shape(2, 256, 65, 1, 256, 8), Shape(8, 128, 33, 1, 128, 4)]
GROUPED_SHAPES += [Shape(2, 256, 65, 1, groups, 1) for groups in (32, 8, 4)]
DEFAULT_SHAPES = DENSE_SHAPES + SMALL_SHAPES + GROUPED_SHAPES
# On a GPU also a training batch of 8 crops at output stride 8: there the kernels, not the launches, dominate.
CUDA_SHAPES = DEFAULT_SHAPES + [Shape(8, 512, 65, 2)]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CPU_DTYPES = ("float32",)  # the CPU table's baseline, onnxruntime's DeformConv, is float32 only


def timeit(fn, repeat: int, warmup: int = 1, device: str | torch.device | None = None) -> list[float]:
    """Wall times of fn() in seconds, after `warmup` untimed calls. On a GPU the launches are
    asynchronous, so each call is timed by CUDA events around it, waited for before the next."""
    for _ in range(warmup):
        fn()
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    times = []
    for _ in range(repeat):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times


def make_inputs(shape: Shape, seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The same values on every device and in every dtype: drawn in float32 on the CPU, then cast."""
    g = torch.Generator().manual_seed(seed)
    c, s, d = shape.channels, shape.size, shape.dilation
    per_group = c // shape.groups
    x = torch.randn(shape.batch, c, s, s, generator=g)
    weight = torch.randn(c, per_group, 3, 3, generator=g) / (3 * per_group**0.5)
    bias = torch.randn(c, generator=g)
    # learned offsets are a few pixels: a scale of the dilation moves samples between cells
    offset = torch.randn(shape.batch, 18 * shape.offset_groups, s, s, generator=g) * d
    return tuple(t.to(device=device, dtype=dtype) for t in (x, offset, weight, bias))


def forward_backward(fn, tensors):
    leaves = [t.detach().requires_grad_() for t in tensors]

    def run():
        for leaf in leaves:
            leaf.grad = None  # as a training step's zero_grad: every call computes and stores new gradients
        out = fn(*leaves)
        out.backward(torch.ones_like(out))

    return run


def inside_counts(shape: Shape, offset: torch.Tensor) -> list[int]:
    """Per tap of the 3x3 kernel, the positions (over the batch) where it samples inside the image
    at these offsets for some offset group: the (position, tap) pairs an im2col layer must multiply."""
    s, d = shape.size, shape.dilation
    by_group = offset.view(shape.batch, shape.offset_groups, 18, s, s)
    grid = torch.arange(s, dtype=offset.dtype)
    counts = []
    for k in range(9):
        dy, dx = by_group[:, :, 2 * k], by_group[:, :, 2 * k + 1]
        h = grid.view(1, 1, s, 1) + (k // 3 - 1) * d + dy
        w = grid.view(1, 1, 1, s) + (k % 3 - 1) * d + dx
        counts.append(int(((h > -1) & (h < s) & (w > -1) & (w < s)).any(1).sum()))
    return counts


def gemm_floor(shape: Shape, offset: torch.Tensor, repeat: int, threads: int) -> dict[str, list[float]]:
    """The GEMMs of an im2col layer's arithmetic alone, as torch.mm (MKL) runs them on one thread on
    matrices of the layer's sizes, divided by `threads` (a perfect split of the rows, as the op's
    threads each run their share single-threaded), the faster of the op's two ways: whole rows
    ([N*P, 9C] x [9C, C]) or one GEMM per tap over the pairs inside the image. Forward: the products;
    backward: the grad columns and the weight gradient. No sampling, no copies, no waits: what an
    im2col design on MKL cannot go below."""
    c, positions = shape.channels, shape.batch * shape.size**2
    g = torch.Generator().manual_seed(1)

    def way(rows: list[int], depth: int) -> dict[str, list[float]]:
        """GEMMs of rows[i] x depth columns by depth x C weights, one per entry of rows."""
        a = [torch.randn(n, depth, generator=g) for n in rows]
        w = [torch.randn(depth, c, generator=g) for _ in rows]
        go = [torch.randn(n, c, generator=g) for n in rows]
        out = [torch.empty(n, c) for n in rows]
        gcol, gw = [torch.empty_like(t) for t in a], [torch.empty_like(t) for t in w]

        def fwd():
            for i in range(len(rows)):
                torch.mm(a[i], w[i], out=out[i])

        def fwdbwd():
            fwd()
            for i in range(len(rows)):
                torch.mm(go[i], w[i].t(), out=gcol[i])
                torch.mm(a[i].t(), go[i], out=gw[i])

        return {"gemm_fwd": timeit(fwd, repeat), "gemm_fwdbwd": timeit(fwdbwd, repeat)}

    inside = inside_counts(shape, offset)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = way([positions], 9 * c)
        by_tap = way(inside, c)
    finally:
        torch.set_num_threads(before)
    faster = {name: min(whole[name], by_tap[name], key=statistics.median) for name in whole}
    return {name: [t / threads for t in times] for name, times in faster.items()}


def taps_inside(shape: Shape) -> float:
    """The share of (position, tap) pairs that sample inside the image at the benchmark's offsets: on a
    small map it moves with the offsets' scale, and the per-tap GEMMs' floor with it."""
    return sum(inside_counts(shape, make_inputs(shape)[1])) / (9 * shape.batch * shape.size**2)


def bench_shape(shape: Shape, repeat: int, threads: int, with_torchvision: bool) -> dict[str, list[float]]:
    """One round of timings of every implementation at one shape: name -> wall times."""
    x, offset, weight, bias = make_inputs(shape)
    d, groups = shape.dilation, shape.groups
    conv = lambda x, w, b: F.conv2d(x, w, b, padding=d, dilation=d, groups=groups)  # noqa: E731
    ours = lambda x, o, w, b: segdcn.ops.deform_conv2d(x, o, w, b, padding=d, dilation=d)  # noqa: E731
    tv = lambda x, o, w, b: torchvision.ops.deform_conv2d(x, o, w, b, padding=d, dilation=d)  # noqa: E731
    ort = OrtDeformConv(weight, (1, 1), (d, d), (d, d), groups, shape.offset_groups, mask=False, threads=threads)

    with torch.no_grad():
        row = {
            "conv_fwd": timeit(lambda: conv(x, weight, bias), repeat),
            "segdcn_fwd": timeit(lambda: ours(x, offset, weight, bias), repeat),
            "ort_fwd": timeit(lambda: ort(x, offset, weight, bias), repeat),
        }
    row["conv_fwdbwd"] = timeit(forward_backward(conv, (x, weight, bias)), repeat)
    row["segdcn_fwdbwd"] = timeit(forward_backward(ours, (x, offset, weight, bias)), repeat)
    if shape.groups == 1:  # the im2col plan's shapes
        row.update(gemm_floor(shape, offset, repeat, threads))
    if with_torchvision:
        with torch.no_grad():
            row["tv_fwd"] = timeit(lambda: tv(x, offset, weight, bias), repeat)
        row["tv_fwdbwd"] = timeit(forward_backward(tv, (x, offset, weight, bias)), max(1, repeat // 2))
    return row


def peak_memory(fn, device: torch.device) -> int | None:
    """Bytes allocated by one call of fn at its peak, above what was held before (CUDA's allocator
    counts them; on the CPU there is no such count: `--memory` measures the op there)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def bench_shape_on_device(
    shape: Shape, dtype: torch.dtype, device: torch.device, repeat: int, with_torchvision: bool, memory: bool
) -> dict:
    """One round at one shape and dtype on a GPU: cuDNN's conv2d ("cudnn"), segdcn and torchvision,
    forward and forward+backward, and (with `memory`) each one's peak memory of forward+backward.
    An implementation that refuses the dtype (torchvision has no bfloat16 kernel) is listed under
    "unsupported" with its error, not timed."""
    x, offset, weight, bias = make_inputs(shape, device=device, dtype=dtype)
    d, groups = shape.dilation, shape.groups
    impls = {
        "cudnn": (lambda x, w, b: F.conv2d(x, w, b, padding=d, dilation=d, groups=groups), (x, weight, bias)),
        "segdcn": (
            lambda x, o, w, b: segdcn.ops.deform_conv2d(x, o, w, b, padding=d, dilation=d),
            (x, offset, weight, bias),
        ),
    }
    if with_torchvision:
        impls["tv"] = (
            lambda x, o, w, b: torchvision.ops.deform_conv2d(x, o, w, b, padding=d, dilation=d),
            (x, offset, weight, bias),
        )
    row: dict = {"times": {}, "peak_bytes": {}, "unsupported": {}}
    for name, (fn, tensors) in impls.items():
        step = forward_backward(fn, tensors)
        try:
            with torch.no_grad():
                row["times"][f"{name}_fwd"] = timeit(lambda fn=fn, t=tensors: fn(*t), repeat, device=device)
            row["times"][f"{name}_fwdbwd"] = timeit(step, repeat, device=device)
        except (RuntimeError, NotImplementedError) as e:
            row["times"].pop(f"{name}_fwd", None)
            row["unsupported"][name] = str(e).splitlines()[0]
            continue
        if memory:
            row["peak_bytes"][name] = peak_memory(step, device)
    return row


def device_ratios(times: dict, peaks: dict) -> dict:
    """segdcn against cuDNN's conv and torchvision: time ratios, and peak memory ratios where measured."""
    out = {}
    for kind in ("fwd", "fwdbwd"):
        ours = times.get(f"segdcn_{kind}")
        if ours is None:
            continue
        if f"cudnn_{kind}" in times:
            out[f"{kind} / cudnn"] = ours / times[f"cudnn_{kind}"]
        if f"tv_{kind}" in times:
            out[f"tv {kind} / ours"] = times[f"tv_{kind}"] / ours
    if peaks.get("segdcn") and peaks.get("cudnn"):
        out["memory / cudnn"] = peaks["segdcn"] / peaks["cudnn"]
    if peaks.get("segdcn") and peaks.get("tv"):
        out["tv memory / ours"] = peaks["tv"] / peaks["segdcn"]
    return out


def format_device_table(results: list[dict]) -> str:
    """The GPU times, peak memory and ratios of every shape and dtype, as Markdown."""
    time_cols = [f"{impl}_{kind}" for kind in ("fwd", "fwdbwd") for impl in ("cudnn", "segdcn", "tv")]
    time_cols = [c for c in time_cols if any(c in r["times"] for r in results)]
    peak_cols = [i for i in ("cudnn", "segdcn", "tv") if any(r["peak_bytes"].get(i) for r in results)]
    ratio_cols = list(dict.fromkeys(k for r in results for k in r["ratios"]))
    header = ["dtype", "shape"] + [f"{c} ms" for c in time_cols] + [f"{c} peak MiB" for c in peak_cols] + ratio_cols
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in results:
        cells = [r["dtype"], r["shape"]]
        cells += [f"{1000 * r['times'][c]:.3f}" if c in r["times"] else "-" for c in time_cols]
        cells += [f"{r['peak_bytes'][c] / 2**20:.1f}" if r["peak_bytes"].get(c) else "-" for c in peak_cols]
        cells += [f"{r['ratios'][c]:.2f}" if c in r["ratios"] else "-" for c in ratio_cols]
        lines.append("| " + " | ".join(cells) + " |")
    unsupported = {(impl, r["dtype"]): why for r in results for impl, why in r["unsupported"].items()}
    for (impl, dtype), why in unsupported.items():
        lines.append(f"\n{impl} at {dtype}: not timed ({why})")
    lines.append(
        "\nms: median of the rounds' runs (CUDA events); peak MiB: memory allocated by one forward+backward "
        "above its inputs (outputs and gradients included); cudnn: F.conv2d with cudnn.benchmark, whose float32 "
        "convolutions use TF32 (torch's default) while segdcn's float32 GEMMs follow "
        "torch.backends.cuda.matmul.allow_tf32 (off by default)"
    )
    return "\n".join(lines)


def bench_device(args, device: torch.device, emit) -> list[dict]:
    """--device cuda: every shape x dtype, in rounds; memory in the first round only."""
    results = []
    for shape in args.shapes:
        rounds: dict[str, list[dict]] = {name: [] for name in args.dtypes}
        for i in range(args.rounds):
            for name in args.dtypes:
                # cuDNN at its best algorithm for each shape, the fair baseline (TF32 in float32, torch's default)
                with torch.backends.cudnn.flags(enabled=True, benchmark=True):
                    row = bench_shape_on_device(
                        shape, DTYPES[name], device, args.repeat, not args.no_torchvision, memory=i == 0
                    )
                rounds[name].append(row)
        for name in args.dtypes:
            first = rounds[name][0]
            times = medians([r["times"] for r in rounds[name]])
            results.append(
                {
                    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
                    "dtype": name,
                    "shape": str(shape),
                    "config": asdict(shape),
                    "times": times,
                    "peak_bytes": first["peak_bytes"],
                    "unsupported": first["unsupported"],
                    "ratios": device_ratios(times, first["peak_bytes"]),
                }
            )
        print(f"  measured {shape} on {device}", file=sys.stderr, flush=True)
    emit(format_device_table(results))
    return results


def medians(rounds: list[dict[str, list[float]]]) -> dict[str, float]:
    """The median over all rounds of each implementation's times."""
    names = dict.fromkeys(name for r in rounds for name in r)
    return {name: statistics.median(t for r in rounds for t in r.get(name, [])) for name in names}


def ratios(row: dict, inside: float | None = None) -> dict:
    out = {
        "fwd / conv": row["segdcn_fwd"] / row["conv_fwd"],
        "fwd / ort": row["segdcn_fwd"] / row["ort_fwd"],
        "fwdbwd / conv": row["segdcn_fwdbwd"] / row["conv_fwdbwd"],
    }
    if "gemm_fwd" in row:
        out["gemm fwd / conv"] = row["gemm_fwd"] / row["conv_fwd"]
        out["gemm fwdbwd / conv"] = row["gemm_fwdbwd"] / row["conv_fwdbwd"]
        out["taps inside"] = inside
    if "tv_fwdbwd" in row:
        out["tv fwdbwd / ours"] = row["tv_fwdbwd"] / row["segdcn_fwdbwd"]
        out["tv fwd / ours"] = row["tv_fwd"] / row["segdcn_fwd"]
    return out


# The speed targets of segdcn's CPU kernels (float32), per kind of shape (Shape.kind). The dense
# res5/res4 layers are DeepLab's; the others are issue 22's: depthwise and grouped against the
# same-groups F.conv2d, small maps where per-call overhead rather than arithmetic decides.
TARGETS = {
    "dense": {
        "fwd / conv": ("<=", 1.35),
        "fwd / ort": ("<=", 1.0),
        "fwdbwd / conv": ("<=", 1.2),
        "tv fwdbwd / ours": (">=", 5.0),
    },
    "small map": {"fwd / conv": ("<=", 1.3), "fwdbwd / conv": ("<=", 1.6)},
    "depthwise": {"fwd / conv": ("<=", 5.0), "fwdbwd / conv": ("<=", 8.0), "tv fwdbwd / ours": (">=", 10.0)},
    "grouped": {"fwd / conv": ("<=", 1.5)},
}
SCALING_TARGET = 1.6  # two threads at least this much faster than one
MEMORY_SLACK = 1.25  # temporaries at N=8 at most this multiple of those at N=1,
MEMORY_NOISE = 16 << 20  # plus this much for the allocator's page-level noise (about 10 MiB seen)


def meets(value: float, rule: tuple[str, float]) -> bool:
    op, bound = rule
    return value <= bound if op == "<=" else value >= bound


def verdict(ratios_: dict, kind: str) -> str:
    failed = [name for name, rule in TARGETS[kind].items() if name in ratios_ and not meets(ratios_[name], rule)]
    return "PASS" if not failed else "FAIL (" + ", ".join(failed) + ")"


def format_table(results: list[dict]) -> str:
    """The times and ratios of every shape and thread count, with the verdict, as Markdown."""
    time_cols = ["conv_fwd", "segdcn_fwd", "ort_fwd", "tv_fwd", "gemm_fwd", "conv_fwdbwd", "segdcn_fwdbwd"]
    time_cols += ["tv_fwdbwd", "gemm_fwdbwd"]
    time_cols = [c for c in time_cols if any(c in r["times"] for r in results)]
    ratio_cols = list(dict.fromkeys(k for r in results for k in r["ratios"]))
    header = ["threads", "shape", "kind"] + [f"{c} ms" for c in time_cols] + ratio_cols + ["targets"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in results:
        cells = [str(r["threads"]), r["shape"], r["kind"]]
        cells += [f"{1000 * r['times'][c]:.1f}" if c in r["times"] else "" for c in time_cols]
        cells += [f"{r['ratios'][c]:.2f}" if c in r["ratios"] else "" for c in ratio_cols]
        cells.append(r["verdict"])
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\ntargets (at the largest thread count):")
    for kind, rules in TARGETS.items():
        lines.append(f"- {kind}: " + ", ".join(f"{k} {op} {v}" for k, (op, v) in rules.items()))
    if any(r["verdict"] == "reference" for r in results):
        lines.append("(judged at the largest thread count; rows with fewer threads are the scaling figure's baseline)")
    return "\n".join(lines)


def scaling(results: list[dict]) -> list[dict]:
    """segdcn's speed-up from the smallest to each larger thread count, per shape."""
    by_shape: dict[str, dict[int, dict]] = {}
    for r in results:
        by_shape.setdefault(r["shape"], {})[r["threads"]] = r["times"]
    rows = []
    for shape, runs in by_shape.items():
        low = min(runs)
        for threads in sorted(runs):
            if threads == low:
                continue
            fwd = runs[low]["segdcn_fwd"] / runs[threads]["segdcn_fwd"]
            fwdbwd = runs[low]["segdcn_fwdbwd"] / runs[threads]["segdcn_fwdbwd"]
            ok = threads != 2 * low or min(fwd, fwdbwd) >= SCALING_TARGET
            rows.append(
                {
                    "shape": shape,
                    "from": low,
                    "to": threads,
                    "fwd": fwd,
                    "fwdbwd": fwdbwd,
                    "verdict": "PASS" if ok else "FAIL",
                }
            )
    return rows


def format_scaling(rows: list[dict]) -> str:
    lines = [
        f"\nthread scaling of segdcn (target: {SCALING_TARGET}x from 1 to 2 threads)\n",
        "| shape | threads | fwd speed-up | fwdbwd speed-up | target |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['from']} -> {r['to']} | {r['fwd']:.2f} | {r['fwdbwd']:.2f} | {r['verdict']} |"
        )
    return "\n".join(lines)


def bench_roi(
    repeat: int,
    rois: int = 300,
    channels: int = 512,
    size: int = 65,
    output: int = 7,
    device: str | torch.device = "cpu",
) -> dict:
    """deform_roi_pool with offsets against torchvision's roi_align(aligned=True): 300 RoIs of
    Faster R-CNN-like sizes on a 512-channel stride-16 feature map of a 1040 px image."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, size, size, generator=g)
    image = size * 16.0
    xy = torch.rand(rois, 2, generator=g) * image * 0.8
    wh = 16 + torch.rand(rois, 2, generator=g) * image * 0.4
    boxes = torch.cat([torch.zeros(rois, 1), xy, xy + wh], 1)
    offset = torch.randn(rois, 2, output, output, generator=g) * 0.1
    x, boxes, offset = (t.to(device) for t in (x, boxes, offset))
    ours = lambda x, o: segdcn.ops.deform_roi_pool(x, boxes, o, output, 1 / 16, 2)  # noqa: E731
    tv = lambda x: torchvision.ops.roi_align(x, boxes, output, 1 / 16, 2, aligned=True)  # noqa: E731
    with torch.no_grad():
        row = {
            "tv_fwd": timeit(lambda: tv(x), repeat, device=device),
            "segdcn_fwd": timeit(lambda: ours(x, offset), repeat, device=device),
        }
    row["tv_fwdbwd"] = timeit(forward_backward(tv, (x,)), repeat, device=device)
    row["segdcn_fwdbwd"] = timeit(forward_backward(ours, (x, offset)), repeat, device=device)
    return {name: statistics.median(times) for name, times in row.items()}


def format_roi_table(rows: list[dict], rois: int, channels: int, size: int) -> str:
    lines = [
        f"\ndeform_roi_pool (with offsets) vs torchvision roi_align(aligned=True): {rois} RoIs, "
        f"1x{channels}x{size}x{size}, 7x7, sampling ratio 2 (ratio = segdcn / roi_align)\n",
        "| threads | roi_align fwd ms | segdcn fwd ms | fwd ratio "
        "| roi_align fwdbwd ms | segdcn fwdbwd ms | fwdbwd ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r["times"]
        lines.append(
            f"| {r['threads']} | {1000 * t['tv_fwd']:.1f} | {1000 * t['segdcn_fwd']:.1f} | "
            f"{t['segdcn_fwd'] / t['tv_fwd']:.2f} | {1000 * t['tv_fwdbwd']:.1f} | {1000 * t['segdcn_fwdbwd']:.1f} | "
            f"{t['segdcn_fwdbwd'] / t['tv_fwdbwd']:.2f} |"
        )
    return "\n".join(lines)


# The op's forward and backward kernels are called directly, so the figure is the op's own
# temporaries (autograd may copy gradients, which is not the op's doing). Peak RSS comes from
# VmHWM, reset just before: getrusage's ru_maxrss survives exec and would carry the parent's
# peak into this fresh process.
MEMORY_PROBE = """
import sys, torch, segdcn.ops
n, c, s, d = (int(v) for v in sys.argv[1:])
torch.manual_seed(0)
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
x = torch.randn(n, c, s, s)
offset = torch.randn(n, 18, s, s) * d
weight = torch.randn(c, c, 3, 3) / (3 * c**0.5)
grad = torch.randn(n, c, s, s)
conv = ([1, 1], [d, d], [d, d], 1, 1)
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current RSS
y = torch.ops.segdcn.deform_conv2d(x, weight, offset, None, None, *conv)
grads = torch.ops.segdcn.deform_conv2d_backward(grad, x, weight, offset, None, *conv, [True, True, True])
outputs = y.nbytes + sum(g.nbytes for g in grads)
print(max(0, status("VmHWM") - before - outputs))
"""


def measure_memory(shape: Shape, batches=(1, 8)) -> dict:
    """Peak memory of the op's temporaries (forward + backward), each batch in a fresh process."""
    import subprocess

    out = {}
    for n in batches:
        args = [str(v) for v in (n, shape.channels, shape.size, shape.dilation)]
        result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, *args], capture_output=True, text=True, check=True)
        out[n] = int(result.stdout.strip())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu (against F.conv2d and onnxruntime, at --threads), cuda or cuda:K (against cuDNN's conv and "
        "torchvision, at --dtypes, with peak memory), or auto (default: %(default)s)",
    )
    parser.add_argument(
        "--shapes",
        type=Shape.parse,
        nargs="+",
        help=f"{SHAPE_SYNTAX}, e.g. 2x512x65x2 or 2x256x65x1x256x8 (default: the DeepLab res5/res4 shapes, the "
        "demo's small maps, depthwise and grouped layers; on CUDA also 8x512x65x2)",
    )
    parser.add_argument(
        "--dtypes",
        help=f"comma-separated, of {', '.join(DTYPES)} (default: float32 on the CPU, all three on CUDA)",
    )
    parser.add_argument(
        "--threads",
        help=f"comma-separated CPU thread counts, e.g. 1,2 (default: torch's, here {torch.get_num_threads()})",
    )
    parser.add_argument("--repeat", type=int, help="timed runs per implementation and round (default: 3, CUDA 20)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds over all implementations and thread counts; the median over all rounds' runs is kept",
    )
    parser.add_argument("--no-torchvision", action="store_true", help="skip torchvision (slow on the CPU)")
    parser.add_argument(
        "--im2col-gemms",
        choices=("auto", "rows", "taps", "panels"),
        default="auto",
        help="how the CPU im2col plan multiplies its columns: chosen per tile (auto), one GEMM over whole rows, "
        "one per tap over the rows where it is inside, or segdcn's panel kernel over whole rows "
        "(docs/operator.md, Plans; default: %(default)s)",
    )
    parser.add_argument(
        "--cpu-kernels",
        choices=("auto", "avx2", "portable"),
        default="auto",
        help="the widest instructions segdcn's CPU kernels written in intrinsics may use: the CPU's widest "
        "(auto: AVX-512 where it has them), AVX2 and FMA, or none (docs/operator.md, Plans; default: %(default)s)",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also measure the peak memory of the op's temporaries at N=1 and N=8 (512->512, 65x65)",
    )
    parser.add_argument("--roi", action="store_true", help="also time deform_roi_pool against torchvision's roi_align")
    parser.add_argument("--roi-only", action="store_true", help="time only deform_roi_pool against roi_align")
    parser.add_argument(
        "--roi-config",
        default="300,512,65",
        help="RoIs, channels and feature size of the RoI table (default: %(default)s)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results (and their provenance) as JSON")
    add_results_argument(parser, "the tables")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device, key="--device")
    except ConfigError as error:
        parser.error(str(error))
    cuda = device.type == "cuda"
    if cuda and (args.threads or args.memory):
        parser.error("--threads and --memory measure the CPU op; with --device cuda the table has peak memory")
    args.shapes = args.shapes or (CUDA_SHAPES if cuda else DEFAULT_SHAPES)
    args.repeat = args.repeat or (20 if cuda else 3)
    args.dtypes = (args.dtypes or ("float32,float16,bfloat16" if cuda else "float32")).split(",")
    allowed = DTYPES if cuda else CPU_DTYPES
    if not set(args.dtypes) <= set(allowed):
        parser.error(f"--dtypes on {device.type} takes {', '.join(allowed)}, got {','.join(args.dtypes)!r}")
    try:
        thread_counts = [int(t) for t in (args.threads or str(torch.get_num_threads())).split(",")]
    except ValueError:
        parser.error(f"--threads takes comma-separated integers, got {args.threads!r}")
    try:
        roi_config = [int(v) for v in args.roi_config.split(",")]
        assert len(roi_config) == 3 and min(roi_config) >= 1
    except (ValueError, AssertionError):
        parser.error(f"--roi-config takes three positive integers ROIS,CHANNELS,SIZE, got {args.roi_config!r}")
    if any(t < 1 for t in thread_counts) or args.repeat < 1 or args.rounds < 1:
        parser.error("--threads, --repeat and --rounds must be >= 1")

    info = segdcn.ops.build_info()
    if not info["native"]:
        print(f"segdcn._C is not built: {info.get('error')}", file=sys.stderr)
        return 1
    if cuda and not info["cuda"]:
        print("segdcn._C was built without its CUDA kernels (no nvcc, or SEGDCN_CUDA=0): rebuild it", file=sys.stderr)
        return 1
    for flag, value in (("--im2col-gemms", args.im2col_gemms), ("--cpu-kernels", args.cpu_kernels)):
        if cuda and value != "auto":
            parser.error(f"{flag} is a setting of the CPU op")
    from segdcn import _C  # built: checked above

    before = _C._force_tap_gemms(args.im2col_gemms), _C._force_cpu_kernels(args.cpu_kernels)
    try:
        return measure(args, argv, device, thread_counts, roi_config, info)
    finally:
        _C._force_tap_gemms(before[0])
        _C._force_cpu_kernels(before[1])


def warm_allocator() -> None:
    """Puts the process's allocator in the state a training loop's is in. glibc's malloc serves a block
    over its mmap threshold (128 KiB at start) with fresh pages, a page fault per 4 KiB touched, until
    freeing such a block raises the threshold to its size (up to 32 MiB); in a fresh process the first
    shape measured paid that on every output, F.conv2d's too (a grouped conv took 8.6 ms first and
    2.4 ms after other shapes). One block freed here raises it for every shape alike."""
    torch.empty(24 << 20, dtype=torch.uint8).fill_(0)


def measure(args, argv, device: torch.device, thread_counts: list[int], roi_config: list[int], info: dict) -> int:
    """main's measurements, tables and results files, once the arguments are checked."""
    cuda = device.type == "cuda"
    warm_allocator()
    transcript = Transcript()  # what --results writes
    emit = transcript.emit
    where = (
        f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, {', '.join(args.dtypes)}"
        if cuda
        else f"{platform.processor() or platform.machine()}, float32, CPU"
    )
    rounds = f"median of {args.rounds} rounds x {args.repeat} runs"
    if args.im2col_gemms != "auto":
        rounds += f"; im2col GEMMs forced to {args.im2col_gemms}"
    if args.cpu_kernels != "auto":
        rounds += f"; CPU kernels capped at {args.cpu_kernels}"
    emit(f"segdcn {segdcn.__version__}, torch {torch.__version__}, {where}; {rounds}")
    results = bench_device(args, device, emit) if cuda and not args.roi_only else []
    # Rounds and thread counts inside the shape loop: a shape's measurements alternate between
    # thread counts and repeat over rounds, so a drift in this machine's speed (20-30% between
    # minutes on a shared VM) spreads over all of them instead of biasing one. torchvision,
    # the slowest by far and far from its target, is timed in the first round only.
    for shape in [] if args.roi_only or cuda else args.shapes:
        rounds: dict[int, list[dict]] = {t: [] for t in thread_counts}
        for i in range(args.rounds):
            for threads in thread_counts:
                torch.set_num_threads(threads)
                with_tv = i == 0 and not args.no_torchvision
                rounds[threads].append(bench_shape(shape, args.repeat, threads, with_tv))
        # the share of taps inside is the shape's (its offsets'), the same at every thread count
        inside = taps_inside(shape) if "gemm_fwd" in rounds[thread_counts[0]][0] else None
        for threads in thread_counts:
            times = medians(rounds[threads])
            r = ratios(times, inside)
            results.append(
                {
                    "threads": threads,
                    "shape": str(shape),
                    "kind": shape.kind,
                    "config": asdict(shape),
                    "times": times,
                    "ratios": r,
                    # the targets hold at the machine's thread count; fewer threads are the
                    # baseline of the scaling figure (torchvision's serial code cannot be beaten 5x
                    # at one thread by anything that costs at least a plain convolution)
                    "verdict": verdict(r, shape.kind) if threads == max(thread_counts) else "reference",
                }
            )
            print(f"  measured {shape} at {threads} thread(s)", file=sys.stderr, flush=True)
    results.sort(key=lambda r: r["threads"])
    report = {"provenance": provenance(tool_argv(__file__, argv)), "build_info": info, "results": results}
    report["torch"] = torch.__version__
    report["device"] = str(device)
    if results and not cuda:
        emit(format_table(results))
    if args.roi or args.roi_only:
        report["roi"] = []
        for threads in [torch.get_num_threads()] if cuda else thread_counts:
            torch.set_num_threads(threads)
            times = bench_roi(args.repeat, *roi_config, device=device)
            report["roi"].append({"threads": "-" if cuda else threads, "times": times})
        emit(format_roi_table(report["roi"], *roi_config))
    if len(thread_counts) > 1 and results and not cuda:
        report["scaling"] = scaling(results)
        emit(format_scaling(report["scaling"]))
    if args.memory:
        mem = measure_memory(Shape(1, 512, 65, 2))
        ok = mem[8] <= MEMORY_SLACK * mem[1] + MEMORY_NOISE
        report["memory"] = {"temporaries_bytes": mem, "verdict": "PASS" if ok else "FAIL"}
        emit(
            f"\ntemporaries of forward+backward, 512->512 65x65 d=2: N=1 {mem[1] / 2**20:.0f} MiB, "
            f"N=8 {mem[8] / 2**20:.0f} MiB (target: N=8 <= {MEMORY_SLACK} x N=1 + {MEMORY_NOISE >> 20} MiB): "
            f"{report['memory']['verdict']}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    if args.results:
        title = "CUDA op benchmark: deform_conv2d" if cuda else "CPU op benchmark: deform_conv2d"
        for path in write_results(args.results, title, transcript.markdown(), report["provenance"]):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
