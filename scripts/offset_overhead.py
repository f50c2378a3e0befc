"""What the offset logging of a training run costs at each evaluation, against the evaluation's own time.

Evaluates a checkpoint's model on its validation split as segdcn-train does at every evaluation, with
and without the offset statistics (segdcn.engine.offsets: hooks on the first logger.offset_images
validation images, the statistics, their sum over processes), and times the picture of the sampling
locations (one forward pass, the trace, a PNG) on its own. Runs alternate, --repeats times after one
warm-up, and the fastest of each kind are compared in this process (other processes only ever add
time, so the minimum is the least disturbed measurement on a shared machine):

    statistics overhead = statistics' time / evaluation's time

where the statistics' time is measured image by image: each watched image is inferred with and
without the hooks in turn and the fastest of each compared (the difference of whole evaluations is
shown too; on a shared machine it is within the noise of a few percent).

The settings are the checkpoint's (eval.*, dataset, precision) with logger.offset_* at the schema's
defaults unless --offset-images says otherwise. The target: statistics at most 5% of the evaluation.

    python scripts/offset_overhead.py --ckpt RUN/checkpoints/best.pt
    python scripts/offset_overhead.py --sweep outputs/demo/<date>_<time> --results docs/results/offset_overhead.md

--sweep DIR takes the checkpoint of the sweep's finished deformable run with the highest mIoU.
--results FILE writes the table under the command, commit, date, machine and versions
(segdcn.provenance), with FILE's .json beside it. Dataset overrides (dataset.root=...) go anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = 0.05  # the bound: the statistics cost at most 5% of an evaluation


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a segdcn-train checkpoint with deformable layers")
    source.add_argument("--sweep", help="or a sweep folder: the checkpoint of its best deformable run")
    parser.add_argument("--repeats", type=int, default=7, help="timed evaluations of each kind (default: 7)")
    parser.add_argument("--offset-images", type=int, help="logger.offset_images (default: the schema's)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:K")
    from segdcn.provenance import add_results_argument

    add_results_argument(parser, "the timings")
    parser.add_argument("overrides", nargs="*", help="dataset.<key>=<value> overrides")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be 1 or more, got {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from omegaconf import OmegaConf

    from segdcn.analysis.inputs import dataset_config
    from segdcn.analysis.runs import best_deformable_run
    from segdcn.config import TrainConfig
    from segdcn.data import build_dataset, label_set
    from segdcn.engine.checkpoint import model_from_checkpoint
    from segdcn.engine.evaluate import evaluate
    from segdcn.engine.offsets import OffsetMonitor

    ckpt = Path(args.ckpt) if args.ckpt else best_deformable_run(args.sweep).checkpoint
    model, train_cfg = model_from_checkpoint(ckpt, args.device)
    dataset_cfg = dataset_config(train_cfg, args.overrides, ckpt)
    merged = OmegaConf.merge(train_cfg, {"dataset": dataset_cfg})
    if args.offset_images is not None:
        merged.logger.offset_images = args.offset_images
    cfg = TrainConfig.from_config(merged)  # checkpoints from before a setting existed get its default
    val_set = build_dataset(cfg.dataset, cfg.eval.split, augment=False)
    names = label_set(cfg.dataset.name, cfg.dataset.root).names
    picture_dir = Path(tempfile.mkdtemp(prefix="offset_overhead_"))
    monitor = OffsetMonitor.build(model, val_set, cfg, picture_dir, names)
    if monitor is None:
        raise SystemExit(f"{ckpt}: the model has no deformable layers, so there is no offset logging to time")

    def evaluation(probe) -> float:
        start = time.perf_counter()
        evaluate(
            model,
            val_set,
            cfg.eval,
            device=args.device,
            precision=cfg.trainer.precision,
            num_classes=int(cfg.dataset.num_classes),
            ignore_index=int(cfg.dataset.ignore_index),
            progress=False,
            probe=probe,
        )
        if probe is not None:
            probe.eval_metrics(lambda sums: sums)  # one process: the sum over processes is the sums
        return time.perf_counter() - start

    def watched_cost(rounds: int) -> float:
        """The statistics' own time, image by image: each watched image inferred with and without the
        probe in turn, the fastest of each compared, summed, plus summing up the statistics."""
        import torch

        from segdcn.engine.inference import infer_with_config

        model.eval()
        total = 0.0
        with torch.no_grad():
            for index in range(monitor.images):
                image, label = val_set[index]
                image, label = image[None].to(args.device), torch.as_tensor(label)[None]
                times: dict[bool, list[float]] = {False: [], True: []}
                for round_ in range(rounds):
                    for probed in (False, True) if round_ % 2 == 0 else (True, False):  # neither always first
                        start = time.perf_counter()
                        with monitor.watch(index, image, label) if probed else contextlib.nullcontext():
                            infer_with_config(model, image, label.shape[-2:], cfg.eval, cfg.trainer.precision)
                        times[probed].append(time.perf_counter() - start)
                total += min(times[True]) - min(times[False])
        start = time.perf_counter()
        monitor.eval_metrics(lambda sums: sums)
        return total + time.perf_counter() - start

    def picture() -> float:
        start = time.perf_counter()
        if monitor.draw(0) is None:
            raise SystemExit("the offsets picture could not be drawn (see the warning above)")
        return time.perf_counter() - start

    evaluation(monitor)  # warm-up: data, kernels, the picture's image
    picture()
    plain, watched, pictures = [], [], []
    for _ in range(args.repeats):
        plain.append(evaluation(None))
        watched.append(evaluation(monitor))
        pictures.append(picture())
    base, with_stats, drawing = (min(v) for v in (plain, watched, pictures))
    direct = watched_cost(args.repeats)
    overhead = direct / base
    verdict = "PASS" if overhead <= TARGET else "FAIL"
    result = {
        "checkpoint": str(ckpt),
        "dataset": cfg.dataset.name,
        "images": len(val_set) if cfg.eval.max_images is None else min(len(val_set), cfg.eval.max_images),
        "offset_images": monitor.images,
        "layers": list(monitor.eval_stats.layer_names.values()),
        "repeats": args.repeats,
        "evaluation_s": base,
        "evaluation_with_statistics_s": with_stats,
        "statistics_s": direct,
        "statistics_overhead": overhead,
        "end_to_end_difference": (with_stats - base) / base,
        "picture_s": drawing,
        "picture_overhead": drawing / base,
        "target": TARGET,
        "verdict": verdict,
    }
    markdown = "\n".join(
        [
            f"Checkpoint `{ckpt}`: {result['images']} {cfg.dataset.name} {cfg.eval.split} images, offset statistics "
            f"of {', '.join(result['layers'])} on the first {monitor.images}; the fastest of {args.repeats} "
            f"alternating runs of each on {args.device}.",
            "",
            "| what | seconds | share of the evaluation | target |",
            "|---|---:|---:|---|",
            f"| evaluation | {base:.3f} | 100% | |",
            f"| evaluation with offset statistics | {with_stats:.3f} | {100 * with_stats / base:.1f}% | |",
            f"| offset statistics, image by image | {direct:.3f} | {100 * overhead:.1f}% | at most "
            f"{100 * TARGET:.0f}%: {verdict} |",
            f"| picture of the sampling locations | {drawing:.3f} | {100 * drawing / base:.1f}% | |",
            "",
        ]
    )
    print(markdown)
    if args.results:
        from segdcn.provenance import write_tool_results

        title = f"Offset logging at an evaluation: {train_cfg.model.backbone.name}, {cfg.dataset.name}"
        write_tool_results(args.results, __file__, argv, title, markdown, result)
    return 0


if __name__ == "__main__":
    from segdcn.analysis.inputs import run_tool

    run_tool(main, __file__)
