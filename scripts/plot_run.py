"""Plot training runs from their metrics.jsonl, without W&B: loss, mIoU and what the offsets do.

One PNG: the training loss and the validation mIoU against iterations, then for each deformable
layer (by its paper name) the mean offset length, the share of samples outside the feature map and
the effective dilation, one line per run, coloured by model.dcn.layers. A sweep directory gives all
its runs (every metrics.jsonl below it); a run still training is plotted as far as it got.

    python scripts/plot_run.py outputs/demo/2026-12-01_10-00-00                # a sweep: its curves.png
    python scripts/plot_run.py RUN_A RUN_B --out compare.png

Offsets are logged at every evaluation (offsets/<layer>/..., dots) and, with logger.offset_every=N,
every N iterations on the training batch (train/offsets/<layer>/..., thin lines); docs/logging.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_NAME = "curves.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run or sweep directories")
    parser.add_argument("--out", type=Path, help=f"the PNG to write (default: the first RUN's {DEFAULT_NAME})")
    parser.add_argument("--title", help="a title over the plot (default: the directories)")
    args = parser.parse_args(argv)

    from segdcn.analysis.curves import curves_figure, read_curves

    runs = read_curves(args.runs)
    title = args.title if args.title is not None else ", ".join(str(path) for path in args.runs)
    out = args.out or args.runs[0] / DEFAULT_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    curves_figure(runs, title).savefig(out, dpi=110)
    layers = sorted({layer for run in runs for layer in run.layers()})
    print(f"{len(runs)} run(s), offsets of {', '.join(layers) if layers else 'no deformable layer'}; wrote {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError) as error:  # a missing directory or an unreadable summary: the message names it
        sys.exit(f"{Path(__file__).name}: error: {error}")
