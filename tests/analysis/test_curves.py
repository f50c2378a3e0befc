"""scripts/plot_run.py (segdcn.analysis.curves) and scripts/offset_overhead.py on runs as segdcn-train leaves them."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.colors import to_hex

from segdcn.analysis.curves import curves_figure, read_curves
from tests.analysis.test_analysis import load_script

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(path: Path, layers: int, seed: int, lines: list[dict], torn: bool = False) -> Path:
    path.mkdir(parents=True)
    text = "".join(json.dumps(line) + "\n" for line in lines) + ('{"step": 9, "train/lo' if torn else "")
    (path / "metrics.jsonl").write_text(text)
    config = {"model.dcn.layers": layers, "seed": seed}
    (path / "summary.json").write_text(json.dumps({"state": "finished", "config": config}))
    return path


def test_curves_of_a_sweep_one_colour_per_number_of_deformable_layers(tmp_path):
    offsets = [
        {
            "step": 4,
            "train/loss": 1.0,
            "train/offsets/res5c/mean_abs_px": 0.5,
            "train/offsets/res5c/out_of_bounds": 0.1,
        },
        {
            "step": 8,
            "train/loss": 0.7,
            "train/offsets/res5c/mean_abs_px": 0.9,
            "train/offsets/res5c/out_of_bounds": 0.2,
        },
        {"step": 8, "val/miou": 0.4, "offsets/res5c/mean_abs_px": 0.8, "offsets/res5c/effective_dilation": 2.5},
    ]
    plain = [{"step": 4, "train/loss": 1.1}, {"step": 8, "train/loss": 0.9}, {"step": 8, "val/miou": 0.3}]
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", 0, 0, plain)
    write_run(sweep / "1", 1, 0, offsets, torn=True)  # a run killed mid-line: the torn line is skipped
    write_run(sweep / "2", 1, 1, offsets)

    runs = read_curves([sweep])
    assert [(run.path.name, run.dcn_layers, run.seed) for run in runs] == [("0", 0, 0), ("1", 1, 0), ("2", 1, 1)]
    assert runs[1].series["train/loss"] == ([4, 8], [1.0, 0.7])
    assert runs[1].series["train/offsets/res5c/mean_abs_px"] == ([4, 8], [0.5, 0.9])
    assert runs[1].series["offsets/res5c/effective_dilation"] == ([8], [2.5])
    assert runs[0].layers() == [] and runs[1].layers() == ["res5c"]

    figure = curves_figure(runs)
    loss, _, _, length, out_of_bounds, dilation = figure.axes[:6]
    assert len(figure.axes) == 6  # loss, mIoU, legend; one row for res5c
    colours = [to_hex(line.get_color()) for line in loss.lines]
    assert colours[1] == colours[2] != colours[0]  # one colour per model.dcn.layers
    assert [list(line.get_xdata()) for line in length.lines] == [[4, 8], [8], [4, 8], [8]]  # train, eval per run
    assert len(out_of_bounds.lines) == 2 and len(dilation.lines) == 2


def test_plot_run_writes_the_png_of_a_sweep(short_sweep, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert load_script("plot_run").main([str(short_sweep), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    assert "2 run(s), offsets of res5a_branch2b, res5b_branch2a, res5b_branch2b" in capsys.readouterr().out
    runs = read_curves([short_sweep])
    deformable = next(run for run in runs if run.dcn_layers == 3)
    assert deformable.series["offsets/res5b_branch2b/effective_dilation"][0] == [2]  # the final evaluation
    assert not any("offsets" in key for key in next(run for run in runs if run.dcn_layers == 0).series)


def test_offset_overhead_writes_its_figure_with_provenance(short_sweep, tmp_path):
    results = tmp_path / "offset_overhead.md"
    script = load_script("offset_overhead")
    assert script.main(["--sweep", str(short_sweep), "--repeats", "1", "--results", str(results)]) == 0
    text = results.read_text()
    assert "- command: `python " in text and "offset_overhead.py --sweep" in text and "- commit: `" in text
    data = json.loads(results.with_suffix(".json").read_text())
    assert data["offset_images"] == 4 and data["layers"] == ["res5a_branch2b", "res5b_branch2a", "res5b_branch2b"]
    assert data["evaluation_s"] > 0 and data["repeats"] == 1  # one timing of each: too few to tell a small cost
    assert data["statistics_overhead"] == data["statistics_s"] / data["evaluation_s"]
    assert data["verdict"] == ("PASS" if data["statistics_overhead"] <= 0.05 else "FAIL")
    assert f"| {100 * data['statistics_overhead']:.1f}% | at most 5%: {data['verdict']} |" in text
