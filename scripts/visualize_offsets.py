"""Draw where a trained model's deformable layers sample for chosen activations (the paper's Figures 5-7).

Each activation of the last deformable layer is traced back through all the deformable layers to
image pixels: 9 sampling locations of the last layer, 81 of the one before, 729 of the third, ...
(colour by layer), drawn over the image with the activation (green star). One panel per point.

    python scripts/visualize_offsets.py --ckpt RUN/checkpoints/best.pt --index 3
    python scripts/visualize_offsets.py --ckpt RUN/checkpoints/best.pt --index 3 --points 40,60 90,20
    python scripts/visualize_offsets.py --ckpt RUN/checkpoints/best.pt --image photo.jpg --points 120,80
    python scripts/visualize_offsets.py --ckpt ... --index 0 dataset.root=/data/voc --out offsets.png

--index K takes image K of the checkpoint's dataset (split --split, default val; Hydra-style
`dataset=<name>` / `dataset.<key>=<value>` overrides as for segdcn-eval) together with its ground
truth; --image takes any image file (optionally --label, a label PNG of the same size). Without
--points, the points come from the ground truth: the most interior pixel of the largest small,
medium and large object and of the background (sizes as in receptive_field_stats.py). The image is
fed to the model as the evaluation does (dataset.eval.short_side); points are in pixels of the image
file, and each moves to the nearest activation of the last deformable layer (stride pixels apart).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--points takes x,y pairs in image pixels, e.g. 40,60; got {text!r}"
        ) from None
    return x, y


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ckpt", required=True, help="a segdcn-train checkpoint (RUN/checkpoints/best.pt)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", type=int, help="image K of the dataset split (with its ground truth)")
    source.add_argument("--image", help="an image file (RGB); its ground truth only with --label")
    parser.add_argument("--label", help="with --image: a label PNG (class indices) of the same size")
    parser.add_argument("--split", default="val", help="with --index: the dataset split (default: val)")
    parser.add_argument(
        "--points", nargs="+", type=parse_point, metavar="X,Y", help="activation points in image pixels (x,y)"
    )
    parser.add_argument(
        "--out", help="PNG to write (default: RUN/analysis/offsets_<split>_<K>.png or offsets_<name>.png)"
    )
    parser.add_argument("--size-thresholds", default="0.1,0.3", help="small,large object-size thresholds (see above)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:K")
    parser.add_argument(
        "overrides", nargs="*", help="dataset=<name> and dataset.<key>=<value> overrides (anywhere on the line)"
    )
    from segdcn.analysis.inputs import parse_analysis_args

    args = parse_analysis_args(parser, argv)
    if args.label and args.image is None:
        parser.error("--label goes with --image (with --index the ground truth comes from the dataset)")
    return args


def default_out(ckpt: Path, args: argparse.Namespace) -> Path:
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    name = (
        f"offsets_{args.split}_{args.index}.png" if args.index is not None else f"offsets_{Path(args.image).stem}.png"
    )
    return run_dir / "analysis" / name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np

    from segdcn.analysis import SizeThresholds, background_ids_of, capture_offsets
    from segdcn.analysis.figures import layer_chain, trace_figure
    from segdcn.analysis.inputs import dataset_config, prepare_image, read_label_map, read_rgb
    from segdcn.analysis.object_size import labelled_points
    from segdcn.analysis.sampling import trace_image_points
    from segdcn.data import build_dataset, label_set
    from segdcn.engine.checkpoint import model_from_checkpoint

    ckpt = Path(args.ckpt)
    model, train_cfg = model_from_checkpoint(ckpt, args.device)
    dataset_cfg = dataset_config(train_cfg, args.overrides, ckpt)
    names = label_set(dataset_cfg.name, dataset_cfg.root).names
    if args.index is not None:
        dataset = build_dataset(dataset_cfg, args.split, augment=False)
        if not 0 <= args.index < len(dataset):
            raise SystemExit(f"--index {args.index}: the {args.split} split has images 0..{len(dataset) - 1}")
        image, label = dataset.load(args.index)
        tensor, _ = dataset[args.index]
        what = f"{dataset_cfg.name} {args.split} #{args.index} ({Path(dataset.images[args.index]).name})"
    else:
        image = read_rgb(args.image)
        label = read_label_map(args.label, image.shape[:2]) if args.label else None
        tensor = prepare_image(image, dataset_cfg)
        what = Path(args.image).name

    height, width = image.shape[:2]
    scale = (height / tensor.shape[-2], width / tensor.shape[-1])  # model input -> image pixels
    if args.points:
        points = [(f"x={x:g}, y={y:g}", (y, x)) for x, y in args.points]
    elif label is not None:
        thresholds = SizeThresholds(*args.thresholds)
        points = labelled_points(
            np.asarray(label), names, background_ids_of(names), int(dataset_cfg.ignore_index), thresholds
        )
        if not points:
            raise SystemExit("the ground truth has no labelled pixels to pick points from; give --points X,Y ...")
    else:
        raise SystemExit("--image without --label has no ground truth to pick points from; give --points X,Y ...")
    for _, (y, x) in points:
        if not (0 <= x < width and 0 <= y < height):
            raise SystemExit(f"--points {x:g},{y:g} lies outside the {width}x{height} image")

    _, records = capture_offsets(model, tensor[None].to(args.device))
    traces = list(zip([t for t, _ in points], trace_image_points(records, [p for _, p in points], scale), strict=True))
    figure = trace_figure(
        image, traces, scale, suptitle=f"{what}: {layer_chain(records)}", requested=[p for _, p in points]
    )
    out = Path(args.out) if args.out else default_out(ckpt, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    for title, trace in traces:
        y, x = ((trace.activation.numpy() + 0.5) * np.array(scale) - 0.5).tolist()
        print(f"{title}: activation at x={x:.1f}, y={y:.1f}; {trace.num_points} sampling locations")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from segdcn.analysis.inputs import run_tool

    run_tool(main, __file__)
