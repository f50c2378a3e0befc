"""Effective dilation of every deformable layer by object size over a dataset split (the paper's Table 2).

For each deformable layer (named like the paper: res5a, res5b, res5c for ResNet-101; the Caffe
branch names for basic blocks, e.g. res5b_branch2b), every filter position's effective dilation
(the mean distance between the sampling locations of horizontally and vertically adjacent taps, in
pixels of the layer's input map: a plain conv with dilation d gives d) is grouped by the
ground-truth pixel under it:

    small       an object (8-connected region of one class) with sqrt(area) < SMALL x shorter image side
    medium      in between
    large       sqrt(area) >= LARGE x shorter image side        (--size-thresholds SMALL,LARGE; 0.1,0.3)
    background  the "background" class (VOC, synthetic; Cityscapes has none); ignore (255) is left out

Writes effective_dilation.md (the Table 2 layout: mean ± std per layer and group, last layer first,
the paper's row beside ours for the layers it measured, res5a/b/c), effective_dilation.json (the
same with counts, thresholds and settings) and effective_dilation.png (a bar plot), and prints the
Markdown. The paper's numbers were measured with R-FCN on VOC 2007 test: a trend to compare with.

    python scripts/receptive_field_stats.py --ckpt RUN/checkpoints/best.pt
    python scripts/receptive_field_stats.py --ckpt RUN/checkpoints/best.pt --max-images 100 dataset.root=/data/voc
    python scripts/receptive_field_stats.py --ckpt ... dataset=cityscapes dataset.root=/data/cityscapes
    python scripts/receptive_field_stats.py --sweep outputs/demo/2026-11-22_10-00-00 --dcn-layers 3 \
        --results docs/results/demo_effective_dilation.md     # make demo: its best deformable run

--sweep DIR takes the checkpoint of the sweep's finished run with the highest mIoU among those with
--dcn-layers deformable layers (default: any number but 0). --results FILE also writes the Markdown
table under the command, commit, date, machine and versions (segdcn.provenance), with FILE's .json
beside it.

Dataset overrides are Hydra-style and mean what they mean to segdcn-eval: by default the dataset the
checkpoint was trained on, with `dataset.<key>=<value>` applied; `dataset=<name>` takes
conf/dataset/<name>.yaml instead (its classes must be the checkpoint's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OUTPUT_NAME = "effective_dilation"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a segdcn-train checkpoint (RUN/checkpoints/best.pt)")
    source.add_argument("--sweep", help="or a sweep folder: the checkpoint of its best deformable run")
    parser.add_argument("--dcn-layers", type=int, help="with --sweep: runs with this many deformable layers")
    parser.add_argument("--split", default="val", help="dataset split (default: val)")
    parser.add_argument("--max-images", type=int, help="the first N images of the split (default: all)")
    parser.add_argument("--size-thresholds", default="0.1,0.3", help="SMALL,LARGE fractions (default: 0.1,0.3)")
    parser.add_argument("--out-dir", help="where the three files go (default: RUN/analysis)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:K")
    parser.add_argument("--progress", action="store_true", help="a progress bar over the images")
    from segdcn.provenance import add_results_argument

    add_results_argument(parser, "the table")
    parser.add_argument(
        "overrides", nargs="*", help="dataset=<name> and dataset.<key>=<value> overrides (anywhere on the line)"
    )
    from segdcn.analysis.inputs import parse_analysis_args

    args = parse_analysis_args(parser, argv)
    if args.max_images is not None and args.max_images < 1:
        parser.error(f"--max-images must be a positive number of images, got {args.max_images}")
    if args.dcn_layers is not None and (args.sweep is None or args.dcn_layers < 1):
        parser.error(f"--dcn-layers takes a positive number of deformable layers and --sweep, got {args.dcn_layers}")
    return args


def best_deformable_checkpoint(sweep: str, layers: int | None) -> Path:
    """The checkpoint of the finished run in `sweep` with the highest mIoU among those with `layers`
    deformable layers (None: any but 0) and a checkpoint."""
    from segdcn.analysis.runs import best_deformable_run

    best = best_deformable_run(sweep, layers)
    print(f"best run with {layers or 'any number of'} deformable layers: {best.path} (mIoU {100 * best.miou:.1f})")
    return best.checkpoint


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from segdcn.analysis import SizeThresholds, background_ids_of, effective_dilation_by_size
    from segdcn.analysis.figures import effective_dilation_figure
    from segdcn.analysis.inputs import dataset_config
    from segdcn.analysis.paper import paper_table2
    from segdcn.analysis.table2 import table2_dict, table2_markdown
    from segdcn.data import build_dataset, label_set
    from segdcn.engine.checkpoint import model_from_checkpoint

    try:
        thresholds = SizeThresholds(*args.thresholds)
    except ValueError as error:
        raise SystemExit(f"--size-thresholds: {error}") from None
    ckpt = Path(args.ckpt) if args.ckpt else best_deformable_checkpoint(args.sweep, args.dcn_layers)
    model, train_cfg = model_from_checkpoint(ckpt, args.device)
    dataset_cfg = dataset_config(train_cfg, args.overrides, ckpt)
    dataset = build_dataset(dataset_cfg, args.split, augment=False)
    names = label_set(dataset_cfg.name, dataset_cfg.root).names
    progress = None
    if args.progress:
        from tqdm import tqdm

        progress = tqdm
    table = effective_dilation_by_size(
        model,
        dataset,
        background_ids=background_ids_of(names),
        ignore_index=int(dataset_cfg.ignore_index),
        thresholds=thresholds,
        max_images=args.max_images,
        device=args.device,
        progress=progress,
    )
    result = table2_dict(
        table,
        paper_table2(),
        checkpoint=str(ckpt),
        dataset={"name": dataset_cfg.name, "root": str(dataset_cfg.root), "split": args.split},
        model=train_cfg.model.backbone.name,
    )
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    out_dir = Path(args.out_dir) if args.out_dir else run_dir / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = table2_markdown(result)
    (out_dir / f"{OUTPUT_NAME}.md").write_text(markdown)
    (out_dir / f"{OUTPUT_NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    effective_dilation_figure(result).savefig(out_dir / f"{OUTPUT_NAME}.png", dpi=120)
    print(markdown)
    print(f"wrote {out_dir / OUTPUT_NAME}.md, .json, .png")
    if args.results:
        from segdcn.provenance import write_tool_results

        title = f"Effective dilation by object size: {result['model']}, {dataset_cfg.name} {args.split}"
        write_tool_results(args.results, __file__, argv, title, f"Checkpoint: `{ckpt}`\n\n{markdown}", result)
    return 0


if __name__ == "__main__":
    from segdcn.analysis.inputs import run_tool

    run_tool(main, __file__)
