#!/usr/bin/env python
"""Cost of deformable layers in DeepLab: parameters, forward time and training-step time.

Builds DeepLab (the paper's head, frozen BN) with 0 deformable layers and with the last N
(default 3: res5a,b,c) on each implementation (segdcn's native kernels, torchvision's),
times them interleaved in one process on the same input, and prints the ratios to the
plain model beside the paper's Table 4 (ResNet-101 on a GPU).

    python scripts/bench_model.py                                  # R101, OS16, 1x3x513x513
    python scripts/bench_model.py --size 769 --repeat 5 --threads 2 --json bench_model.json
    python scripts/bench_model.py --depth 18 --size 65 --repeat 1  # a quick check
    python scripts/bench_model.py --device cuda --repeat 20        # on a GPU, as the paper's Table 4
    python scripts/bench_model.py --results docs/results/bench_model.md  # make bench: with its provenance
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

import segdcn
from segdcn.engine.device import resolve_device
from segdcn.errors import ConfigError
from segdcn.models import build_model, deformable_layer_names, deformable_layers, param_groups
from segdcn.paper import load_paper
from segdcn.provenance import Transcript, add_results_argument, provenance, tool_argv, write_results

# Table 4 of Dai et al. 2017 (DeepLab, ResNet-101, one GPU), from the paper-numbers data file
PAPER_TABLE4 = load_paper().table4


def parse_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"a size is S or HxW (e.g. 513 or 1024x2048), got {text!r}")
    return (parts[0], parts[-1])


# A pseudo-impl of the benchmark: the DCN model with each deformable layer's sampling replaced by the
# plain convolution it replaces, its offset conv still run (forward and backward). Its time over the
# plain model's is what the offset convs cost; the native DCN model's beyond it is the deformable op's.
OFFSETS_ONLY = "offsets_only"


def offsets_then_conv(layer):
    """layer.forward as its offset conv, then the plain convolution: the offsets (and masks) enter the
    output with weight 0, so the offset conv's backward runs as it does in the deformable layer."""

    def forward(x):
        offset, mask = layer.offset_and_mask(x)
        out = F.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        unused = offset.sum() if mask is None else offset.sum() + mask.sum()
        return out + 0 * unused

    return forward


def build(args, layers: int, impl: str, norm: str):
    backbone = {"name": f"resnet{args.depth}", "output_stride": args.output_stride, "pretrained": "none"}
    if args.width is not None:
        backbone["width"] = args.width
    cfg = {
        "backbone": backbone,
        "norm": norm,
        "head": {"name": args.head},
        "dcn": {"layers": layers, "impl": "native" if impl == OFFSETS_ONLY else impl},
    }
    with warnings.catch_warnings():  # frozen BN without weights warns; the statistics are calibrated below
        warnings.simplefilter("ignore")
        return build_model(cfg, args.num_classes)


def calibrated_state(args, x) -> dict:
    """Weights of a plain model whose BN statistics come from one pass over `x`.

    Frozen BN at its initial identity lets a randomly initialised ResNet's activations grow
    by orders of magnitude (and the offsets with them, thousands of pixels); calibrated
    statistics keep them at the scale of a pretrained network.
    """
    model = build(args, 0, "native", "bn").to(x.device)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: the statistics of this pass
    with torch.no_grad():
        model.train()(x)
    return model.state_dict()


def make_model(args, layers: int, impl: str, state: dict):
    model = build(args, layers, impl, "frozen_bn")  # the paper's norm
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(".conv_offset." in k for k in missing), (missing, unexpected)
    # trained offsets are a few pixels; zero offsets would sample exactly on the grid
    g = torch.Generator().manual_seed(0)
    for layer in deformable_layers(model).values():
        w = layer.conv_offset.weight
        w.data.copy_(torch.randn(w.shape, generator=g) * 0.5 / w[0].numel() ** 0.5)
        if impl == OFFSETS_ONLY:
            layer.forward = offsets_then_conv(layer)
    return model


def forward_fn(model, x):
    def run():
        model.eval()
        with torch.inference_mode():
            model(x)

    return run


def train_step_fn(model, x, labels, losses: list):
    optimizer = torch.optim.SGD(param_groups(model, lr=1e-4, weight_decay=5e-4), lr=1e-4, momentum=0.9)

    def run():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels, ignore_index=255)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    return run


def timed(fn, device: torch.device) -> float:
    """Wall time of fn(); on a GPU its queued kernels are waited for before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=101, choices=(18, 34, 50, 101, 152), help="ResNet depth")
    parser.add_argument("--width", type=int, default=None, help="stem and res2 channels (default: the ResNet's 64)")
    parser.add_argument("--output-stride", type=int, default=16, choices=(8, 16, 32))
    parser.add_argument("--head", default="paper", choices=("paper", "aspp_v2", "aspp_v3"))
    parser.add_argument("--size", type=parse_size, default=(513, 513), help="input S or HxW (default 513)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--layers", type=int, default=3, help="deformable layers of the DCN model (default 3)")
    parser.add_argument(
        "--impls",
        default=f"native,torchvision,{OFFSETS_ONLY}",
        help=f"comma-separated DeformConv2d impls, and {OFFSETS_ONLY}: the offset convs with plain convs "
        "(default: %(default)s)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:K or auto (default: %(default)s)")
    parser.add_argument("--no-train", action="store_true", help="time the forward pass only")
    parser.add_argument("--json", metavar="PATH", help="also write the results (and their provenance) as JSON")
    add_results_argument(parser, "the table")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device, key="--device")
    except ConfigError as error:
        parser.error(str(error))
    impls = [v.strip() for v in args.impls.split(",") if v.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    height, width = args.size
    x = torch.randn(args.batch, 3, height, width).to(device)
    labels = torch.randint(0, args.num_classes, (args.batch, height, width)).to(device)
    configs = [("plain", 0, "native")] + [(f"dcn{args.layers}_{impl}", args.layers, impl) for impl in impls]
    try:  # the model's schema checks --width, --layers and the rest under their config keys
        state = calibrated_state(args, x)
        models = {name: make_model(args, layers, impl, state).to(device) for name, layers, impl in configs}
    except ConfigError as error:
        parser.error(str(error))
    dcn_names = deformable_layer_names(models[configs[-1][0]], args.depth) if len(configs) > 1 else []
    measures = ["forward"] + ([] if args.no_train else ["train_step"])
    losses = {name: [] for name in models}
    fns = {(name, "forward"): forward_fn(model, x) for name, model in models.items()}
    if not args.no_train:
        for name, model in models.items():
            fns[(name, "train_step")] = train_step_fn(model, x, labels, losses[name])
    times = {key: [] for key in fns}

    # interleaved: every configuration runs once per round, so drift affects all of them alike
    for round_ in range(args.warmup + args.repeat):
        for key, fn in fns.items():
            elapsed = timed(fn, device)
            if round_ >= args.warmup:
                times[key].append(elapsed)

    rows = []
    base = {m: statistics.median(times[("plain", m)]) for m in measures}
    for name, layers, impl in configs:
        row = {
            "model": name,
            "deformable_layers": layers,
            "impl": impl if layers else "-",
            "params": sum(p.numel() for p in models[name].parameters()),
        }
        for m in measures:
            row[f"{m}_s"] = statistics.median(times[(name, m)])
            row[f"{m}_ratio"] = row[f"{m}_s"] / base[m]
        if losses[name]:
            row["losses"] = losses[name]  # finite: the timed steps did real arithmetic
        rows.append(row)

    transcript = Transcript()  # what --results writes
    where = (
        f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
        if device.type == "cuda"
        else f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    transcript.emit(
        f"DeepLab-R{args.depth}, output stride {args.output_stride}, {args.head} head, "
        f"{args.batch}x3x{height}x{width}, {args.num_classes} classes; segdcn {segdcn.__version__}, "
        f"torch {torch.__version__}, {where}, float32; median of {args.repeat}"
    )
    if dcn_names:
        transcript.emit(f"deformable layers of the DCN models: {', '.join(dcn_names)}")
    train = "train_step" in measures
    columns = ["model", "impl", "params", "forward (s)", "x plain"] + (["train step (s)", "x plain"] if train else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row["model"], row["impl"], f"{row['params'] / 1e6:.2f}M", f"{row['forward_s']:.3f}"]
        cells.append(f"{row['forward_ratio']:.3f}")
        if train:
            cells += [f"{row['train_step_s']:.3f}", f"{row['train_step_ratio']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    p = PAPER_TABLE4
    voc, cs = p["forward_s"]["voc_aug"], p["forward_s"]["cityscapes"]
    lines.append(
        f"| paper, Table 4 (R101, 3 deformable, GPU) | - | {p['params_m']['plain']}M -> {p['params_m']['deformable']}M "
        f"| VOC {voc['plain']} -> {voc['deformable']}; Cityscapes {cs['plain']} -> {cs['deformable']} "
        f"| VOC {voc['deformable'] / voc['plain']:.3f}; Cityscapes {cs['deformable'] / cs['plain']:.3f} |"
        + (" - | - |" if train else "")
    )
    transcript.emit("\n".join(lines))
    info = provenance(tool_argv(__file__, argv))

    if args.json:
        report = {
            "provenance": info,
            "settings": {
                "depth": args.depth,
                "output_stride": args.output_stride,
                "head": args.head,
                "input": [args.batch, 3, height, width],
                "num_classes": args.num_classes,
                "deformable_layers": dcn_names,
                "repeat": args.repeat,
                "threads": torch.get_num_threads(),
            },
            "machine": {
                "processor": platform.processor() or platform.machine(),
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "torch": torch.__version__,
            },
            "results": rows,
            "paper_table4": PAPER_TABLE4,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    if args.results:
        title = f"Model benchmark: DeepLab-R{args.depth} with and without deformable layers"
        title += " on CUDA" if device.type == "cuda" else ""
        for path in write_results(args.results, title, transcript.markdown(), info):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
