#!/usr/bin/env python
"""The GPU check: everything segdcn claims on CUDA, in one command, with one summary.

Steps, each a subprocess with its own time limit, each logged to OUT/gpu_check.log:
  build        the extension with its CUDA kernels, in place, for this GPU's architecture
               (python setup.py build_ext --inplace, SEGDCN_CUDA=1, MAX_JOBS = the cores)
  tests        the tests of `make test-gpu` (pytest -m gpu): the kernels against the CPU op,
               the determinism alert, 64-bit indexing, streams
  bench_ops    scripts/bench_ops.py --device cuda: segdcn, torchvision and cuDNN's conv in float32,
               float16 and bfloat16, forward and forward+backward, peak memory, DeepLab shapes
  bench_model  scripts/bench_model.py --device cuda: DeepLab-R101 with 0 and 3 deformable layers,
               beside the paper's Table 4 (measured on a GPU)
  train        experiment=demo for 200 iterations on the GPU with trainer.deterministic=true,
               twice from the same seed: their mIoU, speed and whether their weights are equal

    python scripts/gpu_check.py --out build/gpu_check          # all steps (about 5 minutes on one H200)
    make gpu-check                                             # the same in .venv, after make install
    python scripts/gpu_check.py --steps bench_ops,train        # some steps
    python scripts/gpu_check.py --device cpu --steps bench_ops,bench_model,train --quick  # its CPU-less parts

OUT gets gpu_check.md (the summary, with its command, commit, machine and versions), gpu_check.json,
gpu_check.log and the two benchmarks' own results files; scratch (data, runs) goes to OUT/work.
The exit code is 0 when every step passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # segdcn from this checkout, also before it is installed

from segdcn.provenance import provenance, tool_argv, write_results  # noqa: E402

STEPS = ("build", "tests", "bench_ops", "bench_model", "train")
# Seconds each step may take before it is stopped, so that a hang costs at most this much of a GPU
# lease (about 10 minutes in all); the check is sized to take under 8 minutes on one H200-class GPU.
LIMITS = {"build": 200, "tests": 120, "bench_ops": 100, "bench_model": 60, "train": 100}
# The modules the steps after the build import (segdcn's dependencies, pytest for the tests).
NEEDED = ("torch", "torchvision", "numpy", "hydra", "omegaconf", "albumentations", "onnxruntime", "pytest", "PIL")
TRAIN_ITERS = 200


@dataclass
class Step:
    name: str
    status: str = "not run"  # passed, failed (exit code), timed out
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)


class Check:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        self.work = self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = (self.out / "gpu_check.log").open("w")
        self.python = sys.executable

    def run(self, step: Step, label: str, argv: list[str], env: dict | None = None) -> tuple[bool, str]:
        """One command of a step within what is left of the step's limit: whether it passed, and its
        output (stdout and stderr), which also goes to the log. A failure sets the step's status."""
        limit = LIMITS[step.name] if not self.args.quick else 600
        self.log.write(f"\n===== {step.name}: {label}\n$ {' '.join(argv)}\n")
        start = time.perf_counter()
        try:
            result = subprocess.run(
                argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, timeout=max(1.0, limit - step.seconds),
            )  # fmt: skip
            ok, output = result.returncode == 0, result.stdout
            if not ok:
                step.status = f"failed ({label}: exit code {result.returncode})"
        except subprocess.TimeoutExpired as e:
            output = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
            ok, step.status = False, f"timed out ({label}, limit {limit} s)"
        step.seconds += time.perf_counter() - start
        self.log.write(output)
        self.log.flush()
        return ok, output

    # ---- the steps

    def build(self, step: Step) -> None:
        env = {"SEGDCN_CUDA": "1", "MAX_JOBS": str(os.cpu_count())}
        if "TORCH_CUDA_ARCH_LIST" not in os.environ:
            import torch

            major, minor = torch.cuda.get_device_capability(torch.device(self.args.device))
            env["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"  # this GPU's only: a third of the compile time
        if not self.run(step, "compile", [self.python, "setup.py", "build_ext", "--inplace"], env)[0]:
            return
        probe = "import json, segdcn.ops; print(json.dumps(segdcn.ops.build_info()))"
        info = json.loads(subprocess.check_output([self.python, "-c", probe], cwd=ROOT, text=True))
        step.figures = {"cuda": info["cuda"], "cuda_arch_list": info["cuda_arch_list"]}
        step.status = "passed" if info["cuda"] else "failed (segdcn._C has no CUDA kernels after the build)"

    def tests(self, step: Step) -> None:
        report = self.work / "gpu_tests.xml"
        argv = [self.python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
        ok, _ = self.run(step, "pytest -m gpu", argv)
        if report.is_file():
            suite = ET.parse(report).getroot()
            suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
            counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
            counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
            step.figures = counts
        if ok and self.args.device != "cpu" and step.figures.get("passed", 0) == 0:
            step.status = "failed (no GPU test ran: does torch see the GPU in a subprocess?)"
        elif ok:
            step.status = "passed"

    def bench(self, step: Step, script: str, extra: list[str]) -> dict | None:
        stem = f"{step.name}_{self.args.device.split(':')[0]}"
        data = self.work / f"{stem}.json"
        argv = [self.python, f"scripts/{script}", "--device", self.args.device, "--json", str(data)]
        if self.run(step, script, argv + extra + ["--results", str(self.out / f"{stem}.md")])[0]:
            step.status = "passed"
            return json.loads(data.read_text())
        return None

    def bench_ops(self, step: Step) -> None:
        quick = ["--shapes", "1x8x9x2", "--repeat", "1", "--rounds", "1"] if self.args.quick else ["--rounds", "2"]
        report = self.bench(step, "bench_ops.py", quick)
        if report is None:
            return
        # the range over the shapes of each ratio, per dtype (the CPU table has float32 alone)
        by_dtype: dict[str, dict[str, list[float]]] = {}
        for row in report["results"]:
            ratios = by_dtype.setdefault(row.get("dtype", "float32"), {})
            for name, value in row["ratios"].items():
                ratios.setdefault(name, []).append(value)
        step.figures = {
            dtype: {name: [min(v), max(v)] for name, v in ratios.items()} for dtype, ratios in by_dtype.items()
        }

    def bench_model(self, step: Step) -> None:
        quick = ["--depth", "18", "--size", "65", "--repeat", "1"] if self.args.quick else ["--repeat", "10"]
        report = self.bench(step, "bench_model.py", quick)
        if report is None:
            return
        for row in report["results"][1:]:
            step.figures[row["model"]] = {k: row[k] for k in ("forward_s", "forward_ratio", "train_step_ratio")}
        table4 = report["paper_table4"]["forward_s"]["voc_aug"]
        step.figures["paper_forward_ratio_voc"] = table4["deformable"] / table4["plain"]

    def train(self, step: Step) -> None:
        data = self.work / "synthetic"
        sizes = ["--num-train", "16", "--num-val", "8"] if self.args.quick else []
        make = [self.python, "scripts/make_synthetic.py", "--out", str(data), "--seed", "0", "--no-progress", *sizes]
        if not self.run(step, "make_synthetic", make)[0]:
            return
        iters = 2 if self.args.quick else TRAIN_ITERS
        runs, warned = {}, False
        for name in ("a", "b"):
            run_dir = self.work / f"train_{name}"
            overrides = [
                "experiment=demo", f"trainer.device={self.args.device}", "trainer.deterministic=true",
                f"trainer.max_iters={iters}", f"trainer.checkpoint_every={iters}", f"dataset.root={data}",
                f"hydra.run.dir={run_dir}", "logger=none",
            ] + (["trainer.batch_size=4"] if self.args.quick else [])  # fmt: skip
            ok, output = self.run(step, f"run {name}", [self.python, "-m", "segdcn.train", *overrides])
            if not ok:
                return
            runs[name] = run_dir
            # torch's warning under warn_only, for the atomics of the CUDA backward (docs/training.md)
            warned |= "does not have a deterministic implementation" in output
        step.figures = compare_runs(runs["a"], runs["b"]) | {"nondeterminism_warned": warned}
        step.status = "passed"


def compare_runs(a: Path, b: Path) -> dict:
    """Two runs of one config: mIoU and speed of each, and how far apart their final weights are."""
    import torch

    from segdcn.engine.checkpoint import load_checkpoint

    figures: dict = {}
    for name, run in (("a", a), ("b", b)):
        summary = json.loads((run / "summary.json").read_text())
        figures[f"miou_{name}"] = summary["miou"]
        figures[f"it_per_s_{name}"] = summary.get("it_per_s")  # the trainer's figure, as the ablation table's
    weights = [load_checkpoint(run / "checkpoints" / "last.pt")["model"] for run in (a, b)]
    diffs = [(weights[0][k].double() - weights[1][k].double()).abs().max().item() for k in weights[0]]
    figures["weights_bitwise_equal"] = all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    figures["weights_max_abs_diff"] = max(diffs, default=0.0)
    return figures


def rounded(value):
    """Figures for reading: floats to 3 significant digits, in nested dicts and lists too."""
    if isinstance(value, float):
        return float(f"{value:.3g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def summary_markdown(steps: list[Step], device: str) -> str:
    """The summary table; gpu_check.json keeps the figures unrounded."""
    lines = [f"device: {device}", "", "| step | status | seconds | figures |", "|---|---|---|---|"]
    for s in steps:
        figures = json.dumps(rounded(s.figures)).replace("|", "/") if s.figures else ""
        lines.append(f"| {s.name} | {s.status} | {s.seconds:.0f} | {figures} |")
    lines.append(f"\ntotal: {sum(s.seconds for s in steps):.0f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="build/gpu_check", help="where the summary and logs go (default: %(default)s)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:K, or cpu for the parts that need no GPU")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated, of %(default)s")
    parser.add_argument(
        "--quick", action="store_true", help="tiny benchmark shapes and a 2-iteration training on 24 images"
    )
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if not steps or not set(steps) <= set(STEPS):
        parser.error(f"--steps takes a comma-separated list of {', '.join(STEPS)}, got {args.steps!r}")
    if args.device != "cpu" and not args.device.split(":")[0] == "cuda":
        parser.error(f"--device takes cuda, cuda:K or cpu, got {args.device!r}")
    if args.device == "cpu" and "build" in steps:
        # a CPU-only build in place would replace the CUDA kernels of this checkout's extension
        parser.error("--steps build compiles the CUDA kernels: leave it out with --device cpu")
    missing = [name for name in NEEDED if _missing(name)]
    if missing:
        parser.error(f"these modules are not importable: {', '.join(missing)} (make install, or pip install -e .[dev])")
    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device on this machine")
    device_name = torch.cuda.get_device_name(torch.device(args.device)) if args.device != "cpu" else "cpu"

    check = Check(args)
    done = []
    for name in STEPS:
        if name not in steps:
            continue
        step = Step(name)
        print(f"gpu_check: {name} ...", flush=True)
        getattr(check, name)(step)
        print(f"gpu_check: {name} {step.status} in {step.seconds:.0f} s", flush=True)
        done.append(step)
        if name == "build" and step.status != "passed":
            break  # every later step needs the extension
    body = summary_markdown(done, device_name)
    print(body)
    info = provenance(tool_argv(__file__, argv)) | {"gpu": device_name}
    data = {"device": device_name, "steps": [vars(s) for s in done]}
    write_results(check.out / "gpu_check.md", "GPU check", body, info, data=data)
    print(f"wrote {check.out / 'gpu_check.md'} and {check.out / 'gpu_check.json'}; logs: {check.out / 'gpu_check.log'}")
    return 0 if all(s.status == "passed" for s in done) and len(done) == len(steps) else 1


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


if __name__ == "__main__":
    sys.exit(main())
