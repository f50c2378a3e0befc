"""segdcn.analysis.offset_stats, the statistics a training run logs, against the op and the traced locations:
a sampling location counts as out of bounds exactly where deform_conv2d reads only zeros; the grid of all
locations is sampling_locations at every position; masks only for modulated layers; sums add up over parts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from segdcn.analysis import capture_offsets, sampling_locations
from segdcn.analysis.capture import paper_names
from segdcn.analysis.offset_stats import OffsetStats, outside
from segdcn.analysis.sampling import sampling_grid
from segdcn.ops import DeformConv2d, deform_conv2d


def two_layers() -> nn.Module:
    """A plain deformable layer (stride 2, dilation 2) and a modulated one, with random offset convs."""
    model = nn.Sequential(
        DeformConv2d(3, 4, 3, stride=2, padding=2, dilation=2),
        DeformConv2d(4, 4, 3, padding=1, modulated=True),
    )
    for layer in model:
        nn.init.normal_(layer.conv_offset.weight, std=0.5)
        nn.init.normal_(layer.conv_offset.bias, std=2.0)
    return model.eval()


def test_out_of_bounds_is_where_the_op_reads_only_zeros():
    model = two_layers()
    _, records = capture_offsets(model, torch.randn(2, 3, 16, 12))
    record = records[0]
    layer = model[0]
    ones = torch.ones(2, 1, *record.input_size, dtype=torch.float64)
    flags = outside(record)  # [N, 9, out_h, out_w]
    assert 0.05 < flags.double().mean() < 0.95
    for tap in range(9):
        weight = torch.zeros(1, 1, 9, dtype=torch.float64)
        weight[0, 0, tap] = 1.0  # the output is the bilinear sample of an all-ones map at this tap
        out = deform_conv2d(
            ones,
            record.offset.double(),
            weight.view(1, 1, 3, 3),
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
        )
        assert torch.equal(out[:, 0] == 0, flags[:, tap]), tap


def test_the_grid_of_all_locations_is_sampling_locations_everywhere():
    _, records = capture_offsets(two_layers(), torch.randn(1, 3, 16, 12))
    for record in records:
        h, w = record.output_size
        positions = torch.cartesian_prod(torch.arange(h), torch.arange(w)).double()
        expected = sampling_locations(record, positions)  # [P, 9, 2]
        grid = sampling_grid(record)[0]  # [9, 2, h, w]
        assert torch.allclose(grid.permute(2, 3, 0, 1).reshape(-1, 9, 2), expected)


def test_statistics_of_a_plain_and_a_modulated_layer_and_their_sums():
    model = two_layers()
    images = torch.randn(3, 3, 16, 12)
    labels = [np.zeros((16, 12), dtype=np.int64) for _ in range(3)]
    for label in labels:
        label[4:7, 4:7] = 1  # a medium object on background: sqrt(9) / 12 between 0.1 and 0.3
    _, records = capture_offsets(model, images)
    whole = OffsetStats(paper_names(model), background_ids=(0,))
    whole.add(records, labels, (16, 12))
    metrics = whole.metrics()
    plain, modulated = records
    lengths = plain.offset.double().reshape(3, 9, 2, *plain.output_size).norm(dim=2)
    assert metrics["0/mean_abs_px"] == pytest.approx(float(lengths.mean()))
    assert metrics["1/mask_mean"] == pytest.approx(float(modulated.mask.double().mean()))
    assert "0/mask_mean" not in metrics  # a plain layer has no mask
    assert {"0/effective_dilation/medium", "0/effective_dilation/background"} <= metrics.keys()
    assert "0/effective_dilation/large" not in metrics  # no large object: nothing to average

    # image by image in two "processes", summed as an all-reduce would: the same numbers
    parts = [OffsetStats(paper_names(model), background_ids=(0,)) for _ in range(2)]
    for index in range(3):
        _, part = capture_offsets(model, images[index : index + 1])
        parts[index % 2].add(part, labels[index : index + 1], (16, 12))
    total = parts[0].sums() + parts[1].sums()
    parts[0].reduce(lambda sums: sums + parts[1].sums())
    assert torch.equal(parts[0].sums(), total) and parts[0].images == 3
    for key, value in metrics.items():
        assert parts[0].metrics()[key] == pytest.approx(value, rel=1e-6), key  # float32 convs, batched or not
