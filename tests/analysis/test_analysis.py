"""segdcn.analysis and its scripts: sampling locations, effective dilation, object sizes, Table 2.

The sampling locations are checked against independent computations: the regular dilated grid for
zero offsets (a fresh model), the grid moved by a known constant offset field (the offset convs'
bias), and the deformable op itself, which samples coordinate ramps at exactly those locations.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from segdcn.analysis import (
    SizeThresholds,
    capture_offsets,
    effective_dilation,
    offsets_at,
    representative_points,
    sampling_locations,
    size_group_map,
    trace_sampling_locations,
)
from segdcn.analysis.object_size import BACKGROUND, LARGE, MEDIUM, SMALL, UNGROUPED
from segdcn.analysis.paper import paper_table2
from segdcn.analysis.runs import find_runs, group_by, latest_sweep
from segdcn.analysis.stats import DilationTable, LayerDilationStats
from segdcn.analysis.table2 import table2_dict, table2_markdown
from segdcn.models import build_model
from segdcn.ops import DeformConv2d
from tests.helpers import load_script, run_python

# ---- geometry: a fresh (zero-offset) model and a constant offset field ----


def tiny_deeplab(output_stride: int, layers: int) -> nn.Module:
    cfg = {
        "backbone": {"name": "resnet18", "output_stride": output_stride, "pretrained": "none"},
        "norm": "bn",
        "head": {"name": "paper", "channels": 8},
        "dcn": {"layers": layers},
    }
    return build_model(cfg, num_classes=3).eval()


# What the ResNet-18 geometry is, written out here rather than read from the records:
# (input stride in image pixels, dilation) of the deformable layers, first to last.
GEOMETRY = {
    # OS 8: res5 at stride 8 with dilation 4 in res5a_branch2b, res5b_branch2a, res5b_branch2b
    (8, 3): [(8, 4), (8, 4), (8, 4)],
    # OS 32: res5a_branch2a strides 16 -> 32 (dilation 1), the rest at 32
    (32, 4): [(16, 1), (32, 1), (32, 1), (32, 1)],
}


def expected_points(activation, geometry, constant_offsets=None) -> list[np.ndarray]:
    """The image points of each level, last layer first, by enumerating every path of taps.

    Each layer k at input stride s_k with dilation d_k and 3x3 taps (i, j) moves a point by
    s_k * (d_k * (i - 1, j - 1) + offset_k(i, j)); a constant offset field has the same offset everywhere.
    """
    taps = list(itertools.product(range(3), range(3)))
    levels, points = [], [np.asarray(activation, dtype=np.float64)]
    for k in reversed(range(len(geometry))):
        stride, dilation = geometry[k]
        moved = []
        for point in points:
            for t, (i, j) in enumerate(taps):
                offset = np.zeros(2) if constant_offsets is None else constant_offsets[k][t]
                moved.append(point + stride * (dilation * np.array([i - 1, j - 1]) + offset))
        points = moved
        levels.append(np.array(points))
    return levels


@pytest.mark.parametrize(("output_stride", "layers", "size"), [(8, 3, 64), (32, 4, 96)])
def test_zero_offsets_trace_the_regular_dilated_grid(output_stride, layers, size):
    model = tiny_deeplab(output_stride, layers)
    _, records = capture_offsets(model, torch.randn(1, 3, size, size))
    assert [(r.input_stride, r.dilation[0]) for r in records] == GEOMETRY[(output_stride, layers)]
    for record in records:
        torch.testing.assert_close(
            effective_dilation(record), torch.full_like(effective_dilation(record), record.dilation[0])
        )
    point = (size // 2 + 3, size // 2 - 2)  # moves to the nearest activation of the last layer
    trace = trace_sampling_locations(records, point)
    last_stride = records[-1].output_stride
    activation = np.round(np.array(point) / last_stride) * last_stride
    np.testing.assert_allclose(trace.activation.numpy(), activation)
    assert [len(layer.points) for layer in trace.layers] == [9**k for k in range(1, layers + 1)]
    for traced, expected in zip(
        trace.layers, expected_points(activation, GEOMETRY[(output_stride, layers)]), strict=True
    ):
        np.testing.assert_allclose(traced.points.numpy(), expected, atol=1e-9)


def test_a_constant_offset_field_moves_the_samples_by_its_offsets():
    model = tiny_deeplab(8, 3)
    generator = torch.Generator().manual_seed(0)
    constants = []
    for layer in [m for m in model.modules() if isinstance(m, DeformConv2d)]:
        offsets = torch.randn(9, 2, generator=generator, dtype=torch.float64) * 1.5  # (dy, dx) per tap
        nn.init.zeros_(layer.conv_offset.weight)
        with torch.no_grad():
            layer.conv_offset.bias.copy_(offsets.reshape(-1).float())
        constants.append(offsets.float().double().numpy())
    _, records = capture_offsets(model, torch.randn(1, 3, 64, 64))
    trace = trace_sampling_locations(records, (32.0, 24.0))
    for traced, expected in zip(trace.layers, expected_points((32.0, 24.0), GEOMETRY[(8, 3)], constants), strict=True):
        np.testing.assert_allclose(traced.points.numpy(), expected, atol=1e-4)


def test_effective_dilation_of_a_scaled_grid():
    """Offsets (s - 1) * d * (i - 1, j - 1) make the grid s times wider: effective dilation s * d."""
    layer = DeformConv2d(3, 4, 3, padding=2, dilation=2)
    i, j = torch.meshgrid(torch.arange(3) - 1.0, torch.arange(3) - 1.0, indexing="ij")
    nn.init.zeros_(layer.conv_offset.weight)
    with torch.no_grad():
        layer.conv_offset.bias.copy_((0.5 * 2 * torch.stack([i, j], dim=-1)).reshape(-1))  # s = 1.5, d = 2
    _, records = capture_offsets(nn.Sequential(layer), torch.randn(1, 3, 9, 9))
    torch.testing.assert_close(effective_dilation(records[0]), torch.full((1, 9, 9), 3.0, dtype=torch.float64))


@pytest.mark.parametrize(("stride", "dilation"), [(1, 1), (1, 2), (2, 1), (2, 3)])
def test_sampling_locations_are_where_the_op_samples(stride, dilation):
    """A layer whose tap-t filters copy tap t of a y-ramp and an x-ramp outputs the coordinates it sampled:
    bilinear sampling reproduces a linear ramp exactly inside the map. Offsets: any, from a random conv."""
    size = 15
    layer = DeformConv2d(3, 18, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
    generator = torch.Generator().manual_seed(stride * 10 + dilation)
    with torch.no_grad():
        layer.weight.zero_()
        for t, (i, j) in enumerate(itertools.product(range(3), range(3))):
            layer.weight[2 * t, 0, i, j] = 1.0  # y ramp
            layer.weight[2 * t + 1, 1, i, j] = 1.0  # x ramp
        layer.conv_offset.weight.copy_(torch.randn(layer.conv_offset.weight.shape, generator=generator) * 0.05)
        layer.conv_offset.bias.copy_(torch.randn(18, generator=generator))
    y, x = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    image = torch.stack([y, x, torch.ones_like(y)])[None]
    output, records = capture_offsets(nn.Sequential(layer), image)
    record = records[0]
    out_h, out_w = record.output_size
    positions = torch.tensor(list(itertools.product(range(out_h), range(out_w))), dtype=torch.float64)
    locations = sampling_locations(record, positions)  # [P, 9, 2]
    sampled = output[0].reshape(9, 2, out_h * out_w).permute(2, 0, 1).double()  # [P, 9, 2]
    inside = ((locations >= 0) & (locations <= size - 1)).all(dim=2)
    assert inside.float().mean() > 0.5
    torch.testing.assert_close(sampled[inside], locations[inside], atol=1e-4, rtol=0)


def test_offsets_between_positions_are_interpolated():
    """A field linear in the position is read exactly at fractional positions, and clamped beyond the map."""
    layer = DeformConv2d(3, 3, 3, padding=1)
    nn.init.zeros_(layer.conv_offset.weight)
    with torch.no_grad():  # offset channel c = the input's channel 0 (a y ramp) times (c + 1)
        for c in range(18):
            layer.conv_offset.weight[c, 0, 1, 1] = c + 1.0
    y = torch.arange(8.0)[:, None].expand(8, 8)
    _, records = capture_offsets(nn.Sequential(layer), torch.stack([y, y * 0, y * 0])[None])
    positions = torch.tensor([[2.25, 3.5], [6.75, 0.5], [20.0, -3.0]], dtype=torch.float64)
    expected_y = torch.tensor([2.25, 6.75, 7.0], dtype=torch.float64)  # the last clamped to the map
    factors = torch.arange(1.0, 19.0, dtype=torch.float64).reshape(9, 2)
    torch.testing.assert_close(offsets_at(records[0], positions), expected_y[:, None, None] * factors)


# ---- object sizes ----


def squares_label() -> np.ndarray:
    label = np.zeros((100, 120), dtype=np.int64)  # shorter side 100: small < 10 px, large >= 30 px
    label[5:9, 5:9] = 1  # sqrt(16) = 4: small
    label[20:40, 20:40] = 2  # 20: medium
    label[50:90, 60:100] = 1  # 40: large
    label[0:3, 110:120] = 255  # ignore
    return label


def test_size_groups_by_connected_region_area():
    groups = size_group_map(squares_label(), (0,), 255, SizeThresholds(0.1, 0.3))
    assert groups[6, 6] == SMALL and groups[30, 30] == MEDIUM and groups[70, 80] == LARGE
    assert groups[45, 5] == BACKGROUND and groups[1, 115] == UNGROUPED
    assert set(np.unique(groups)) == {SMALL, MEDIUM, LARGE, BACKGROUND, UNGROUPED}


def test_points_are_picked_inside_each_group():
    points = representative_points(squares_label(), (0,), 255, SizeThresholds(0.1, 0.3))
    assert set(points) == {"small", "medium", "large", "background"}
    y, x, class_id = points["large"]
    assert class_id == 1 and 68 <= y <= 71 and 78 <= x <= 81  # the middle of the 40 px square
    y, x, _ = points["small"]
    assert 5 <= y < 9 and 5 <= x < 9
    assert squares_label()[points["background"][:2]] == 0


# ---- Table 2 ----


def test_table2_markdown_and_json_put_the_paper_row_beside_ours():
    model = tiny_deeplab(16, 1)
    # ResNet-18 names its last 3x3 conv res5b_branch2b; rename to see the paper's row for res5c appear
    _, records = capture_offsets(model, torch.randn(1, 3, 64, 64))
    layer = LayerDilationStats.of(records[0])
    layer.paper_name = "res5c"
    groups = size_group_map(np.zeros((64, 64), dtype=np.int64), (0,), 255, SizeThresholds())
    layer.add(records[0], groups, (64, 64))
    table = DilationTable([layer], SizeThresholds(), images=1)
    paper = {
        "setting": "R-FCN on VOC 2007",
        "rows": {
            "res5c": {g: {"mean": 5.0, "std": 1.0} for g in ("small", "medium", "large", "background")}
            | {"dilation": 2}
        },
    }
    result = json.loads(json.dumps(table2_dict(table, paper, checkpoint="x.pt")))
    row = result["layers"][0]
    assert row["groups"]["background"] == {"mean": 2.0, "std": 0.0, "count": 16}
    assert row["groups"]["small"]["count"] == 0 and row["paper"]["small"]["mean"] == 5.0
    markdown = table2_markdown(result)
    assert "| res5c (ours) | 2 | - | - | - | 2.0 ± 0.0 (n=16) |" in markdown
    assert "| res5c (paper) | 2 | 5.0 ± 1.0 |" in markdown
    assert "sqrt(area) < 0.1 x shorter image side" in markdown and "R-FCN on VOC 2007" in markdown


def test_paper_table2_is_read_from_the_papers_data_file(tmp_path, monkeypatch):
    paper_module = pytest.importorskip("segdcn.paper")
    data = tmp_path / "paper.yaml"
    data.write_text(
        "table2:\n  setting: R-FCN on VOC 2007\n  dilation: 2\n  rows:\n"
        "    res5c: {small: [5.3, 3.3], medium: [5.8, 3.5], large: [8.4, 4.5], background: [6.2, 3.0]}\n"
    )
    monkeypatch.setattr(paper_module, "DATA_FILE", data)
    table = paper_table2()
    assert table["setting"] == "R-FCN on VOC 2007"
    assert table["rows"]["res5c"]["large"] == {"mean": 8.4, "std": 4.5} and table["rows"]["res5c"]["dilation"] == 2
    data.write_text("table2:\n  rows:\n    res5c: {small: [5.3, 3.3]}\n")
    with pytest.raises(ValueError, match="table2.rows.res5c needs"):
        paper_table2()


# ---- the scripts on a short synthetic run ----


def deformable_run(sweep: Path) -> Path:
    """The job with three deformable layers."""
    for summary in sorted(sweep.glob("*/summary.json")):
        if json.loads(summary.read_text())["config"]["model.dcn.layers"] == 3:
            return summary.parent
    raise AssertionError(f"no run with model.dcn.layers=3 in {sweep}")


@pytest.fixture(scope="module")
def run_dir(short_sweep):
    return deformable_run(short_sweep)


def dataset_root(run_dir: Path) -> str:
    return OmegaConf.load(run_dir / "config.yaml").dataset.root


def test_visualize_offsets_writes_a_png(run_dir, tmp_path, capsys):
    out = tmp_path / "offsets.png"
    ckpt = str(run_dir / "checkpoints/best.pt")
    result = run_python("scripts/visualize_offsets.py", "--ckpt", ckpt, "--index", "0", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "background" in result.stdout and "819 sampling locations" in result.stdout  # 9 + 81 + 729
    # chosen points, an override typed after them, the default output path (RUN/analysis)
    script = load_script("visualize_offsets")
    assert (
        script.main(
            ["--ckpt", ckpt, "--index", "1", "--points", "10,20", "30,40", f"dataset.root={dataset_root(run_dir)}"]
        )
        == 0
    )
    assert capsys.readouterr().out.count("819 sampling locations") == 2
    assert (run_dir / "analysis" / "offsets_val_1.png").is_file()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--index", "0", "--points", "10;20"], "--points"),
        (["--index", "0", "model.dcn.layers=1"], "dataset.<key>=<value>"),
        (["--index", "7"], "--index 7"),
        (["--index", "0", "--points", "500,2"], "--points 500,2"),
        (["--image", "missing.jpg", "--points", "1,1"], "--image missing.jpg"),
        (["--index", "0", "dataset.root=/nowhere"], "/nowhere"),
    ],
)
def test_visualize_offsets_errors_name_the_argument(run_dir, args, named, capsys):
    script = load_script("visualize_offsets")
    with pytest.raises(BaseException) as error:  # argparse's SystemExit, or the error naming the file or value
        script.main(["--ckpt", str(run_dir / "checkpoints/best.pt"), *args])
    assert named in str(error.value) + capsys.readouterr().err


def test_receptive_field_stats_writes_table2(run_dir, tmp_path):
    result = run_python(
        "scripts/receptive_field_stats.py",
        "--ckpt",
        str(run_dir / "checkpoints/best.pt"),
        "--max-images",
        "2",
        "--out-dir",
        str(tmp_path),
        f"dataset.root={dataset_root(run_dir)}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads((tmp_path / "effective_dilation.json").read_text())
    assert [row["layer"] for row in table["layers"]] == ["res5b_branch2b", "res5b_branch2a", "res5a_branch2b"]
    assert table["images"] == 2 and table["thresholds"] == {"small": 0.1, "large": 0.3}
    background = table["layers"][0]["groups"]["background"]
    assert background["count"] > 0 and abs(background["mean"] - 4.0) < 0.5  # 2 iterations: close to dilation 4
    markdown = (tmp_path / "effective_dilation.md").read_text()
    assert markdown in result.stdout and "| layer | dilation | small | medium | large | background |" in markdown
    assert (tmp_path / "effective_dilation.png").read_bytes()[:4] == b"\x89PNG"


def test_receptive_field_stats_errors_name_the_argument(run_dir, capsys):
    script = load_script("receptive_field_stats")
    ckpt = str(run_dir / "checkpoints/best.pt")
    for args, named in [
        (["--max-images", "0"], "--max-images"),
        (["--size-thresholds", "0.3"], "--size-thresholds"),
        (["--size-thresholds", "0.5,0.2"], "--size-thresholds"),
        (["dataset=nosuch"], "nosuch"),
    ]:
        with pytest.raises(BaseException) as error:  # argparse's SystemExit, or the config error
            script.main(["--ckpt", ckpt, *args])
        assert named in str(error.value) + capsys.readouterr().err, args


@pytest.mark.parametrize("name", ["visualize_offsets", "receptive_field_stats"])
def test_scripts_explain_themselves(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_script(name).main(["--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0 and "dataset.root" in text and "--ckpt" in text


def test_runs_of_the_newest_sweep_grouped_by_deformable_layers(run_dir, tmp_path):
    """make demo writes outputs/demo/<date>_<time>/<job>: the newest sweep's runs, by number of layers."""
    sweep = run_dir.parent
    for name, age in (("2026-01-01_10-00-00", 100), ("2026-01-02_10-00-00", 0)):
        shutil.copytree(sweep, tmp_path / name, ignore=shutil.ignore_patterns("*.pt"))
        for summary in (tmp_path / name).glob("*/summary.json"):
            os.utime(summary, (summary.stat().st_atime, summary.stat().st_mtime - age))
    newest = latest_sweep(tmp_path)
    assert newest == tmp_path / "2026-01-02_10-00-00" and latest_sweep(newest) == newest
    groups = group_by(find_runs(newest), "dcn_layers")
    assert list(groups) == [0, 3] and all(len(runs) == 1 for runs in groups.values())
    assert groups[3][0].checkpoint is None and groups[3][0].miou is not None
    with pytest.raises(FileNotFoundError, match="no summary.json"):
        latest_sweep(tmp_path / "2026-01-02_10-00-00" / "0" / "checkpoints")
