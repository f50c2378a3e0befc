#!/usr/bin/env python
"""One result whatever the topology: the same training run four ways, compared with the single process.

Runs 10 SGD steps of a small DeepLab-R18 (frozen BN, no deformable layers, one thread per process) as
  single       one process
  accumulate   one process, trainer.accumulate=2
  processes    2 processes on one node (torchrun --standalone --nproc_per_node=2), trainer.accumulate=2
  nodes        2 single-process "nodes" meeting through torchrun's c10d rendezvous on 127.0.0.1
and prints how far each one's final weights and logged losses are from the single process's
(docs/training.md says why they agree, and what would make them drift apart).
tests/apps/test_topology.py runs the same four and asserts the agreement.

    python scripts/make_synthetic.py --out /tmp/topo-data --num-train 16 --num-val 4 --no-progress
    python scripts/compare_topologies.py --data /tmp/topo-data --out /tmp/topo
    python scripts/compare_topologies.py --data /tmp/topo-data --out /tmp/topo --results docs/results/topology.md
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
STEPS = 10
TOPOLOGIES = ("single", "accumulate", "processes", "nodes")


def settings(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    """The overrides every topology shares: what differs between them is the loss's reduction alone."""
    return [
        f"dataset.root={data_root}",
        # crops larger than the scaled images: the padding is ignored, so the labelled pixels differ from
        # image to image, and a per-process or per-micro-batch mean would differ from the global one
        "dataset.train.crop_size=[72,72]",
        "dataset.train.scale_range=[0.5,1.0]",
        "model.head.channels=16",
        "model.backbone.width=16",
        "model.norm=frozen_bn",  # no batch statistics, which stay per process on CPUs
        # a plain network: with deformable layers, runs whose micro-batches differ in size drift apart
        # after a few steps however the loss is normalised, because the offset gradient jumps where
        # a sampling point crosses an integer coordinate and zero-initialised offsets start exactly there
        # (docs/training.md)
        "model.dcn.layers=0",
        "optim=sgd",
        "optim.lr=0.02",
        f"trainer.max_iters={STEPS}",
        "trainer.batch_size=4",
        "trainer.num_workers=0",
        "trainer.eval_every=0",
        "trainer.checkpoint_every=0",
        "trainer.log_every=1",
        "trainer.progress=false",
        "trainer.device=cpu",
        "eval.num_workers=0",
        "eval.max_images=2",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def one_thread_env() -> dict[str, str]:
    """torchrun's one thread per worker, in every run, so that every run rounds alike; segdcn from this checkout."""
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(topology: str, run_dir: Path, data_root: Path, timeout: float = 300) -> None:
    """One run of `topology` into run_dir; raises RuntimeError with the end of its log if it fails."""
    trainer = ["-m", "segdcn.train"]
    if topology == "single":
        commands = [[*trainer, *settings(data_root, run_dir)]]
    elif topology == "accumulate":
        commands = [[*trainer, *settings(data_root, run_dir, "trainer.accumulate=2")]]
    elif topology == "processes":
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        commands = [[*launcher, *trainer, *settings(data_root, run_dir, "trainer.accumulate=2")]]
    elif topology == "nodes":
        launcher = [
            "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{free_port()}", "--rdzv_id=segdcn-topology",
        ]  # fmt: skip
        commands = [[*launcher, *trainer, *settings(data_root, run_dir)]] * 2  # one launch per "node"
    else:
        raise ValueError(f"topology {topology!r}: expected one of {', '.join(TOPOLOGIES)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    logs = [run_dir.parent / f"{run_dir.name}.{i}.log" for i in range(len(commands))]
    # files, not pipes: a full pipe would stall one node while the other waits for it
    processes = [
        subprocess.Popen(
            [sys.executable, *command], cwd=ROOT, env=one_thread_env(), stdout=log.open("w"), stderr=subprocess.STDOUT
        )
        for command, log in zip(commands, logs, strict=True)
    ]
    for process, log in zip(processes, logs, strict=True):
        if process.wait(timeout=timeout) != 0:
            raise RuntimeError(f"{topology} run failed (exit code {process.returncode}):\n{log.read_text()[-4000:]}")


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from segdcn.engine.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["train/loss"] for r in map(json.loads, lines) if "train/loss" in r]


def world_size(run_dir: Path) -> int:
    return json.loads((run_dir / "summary.json").read_text())["world_size"]


def relative_differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    """||a - b|| / ||b|| over all floating-point weights as one vector, and the largest per tensor."""
    keys = [k for k in b if b[k].is_floating_point()]
    if a.keys() != b.keys():
        raise ValueError(f"the two runs have different weights: {sorted(a.keys() ^ b.keys())[:5]}")
    diff = {k: float((a[k].double() - b[k].double()).norm()) for k in keys}
    norm = {k: float(b[k].double().norm()) for k in keys}
    overall = sum(d * d for d in diff.values()) ** 0.5 / sum(n * n for n in norm.values()) ** 0.5
    return overall, max(diff[k] / max(norm[k], 1e-12) for k in keys)


def compare(run_dir: Path, single: Path) -> dict:
    """How far a run is from the single process: weights (overall, worst tensor) and logged losses (relative)."""
    overall, per_tensor = relative_differences(weights(run_dir), weights(single))
    ours, theirs = losses(run_dir), losses(single)
    if len(ours) != len(theirs):
        raise ValueError(f"{run_dir} logged {len(ours)} losses, the single process {len(theirs)}")
    loss = max(abs(x - y) / abs(y) for x, y in zip(ours, theirs, strict=True))
    return {"world_size": world_size(run_dir), "weights": overall, "weights_worst_tensor": per_tensor, "loss": loss}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a synthetic set (scripts/make_synthetic.py --out)")
    parser.add_argument("--out", type=Path, required=True, help="where the four runs go")
    parser.add_argument("--json", metavar="PATH", help="also write the figures (and their provenance) as JSON")
    sys.path.insert(0, str(ROOT))
    from segdcn.provenance import Transcript, add_results_argument, provenance, tool_argv, write_results

    add_results_argument(parser, "the table")
    args = parser.parse_args(argv)
    if not (args.data / "VOCdevkit" / "VOC2012").is_dir():
        parser.error(f"--data {args.data}: no VOCdevkit/VOC2012 there (write one with scripts/make_synthetic.py)")
    runs = {name: args.out / name for name in TOPOLOGIES}
    for name, run_dir in runs.items():
        print(f"  training: {name}", file=sys.stderr, flush=True)
        train(name, run_dir, args.data)
    figures = {name: compare(run_dir, runs["single"]) for name, run_dir in runs.items() if name != "single"}

    transcript = Transcript()
    transcript.emit(
        f"{STEPS} SGD steps of DeepLab-R18 (width 16, frozen BN, no deformable layers), global batch 4, "
        "OMP_NUM_THREADS=1 in every process; torch " + torch.__version__
    )
    lines = [
        "| topology | processes | weights: relative difference | worst tensor | loss: worst relative difference |",
        "|---|---|---|---|---|",
    ]
    for name, f in figures.items():
        lines.append(
            f"| {name} | {f['world_size']} | {f['weights']:.2e} | {f['weights_worst_tensor']:.2e} | {f['loss']:.2e} |"
        )
    transcript.emit("\n".join(lines))
    transcript.emit("(each against the single process; tests/apps/test_topology.py asserts under 1e-6)")
    info = provenance(tool_argv(__file__, argv))
    if args.json:
        Path(args.json).write_text(json.dumps({"provenance": info, "figures": figures}, indent=2) + "\n")
    if args.results:
        title = "Training topologies against one process"
        for path in write_results(args.results, title, transcript.markdown(), info):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
