"""Analysis of trained models: learned sampling locations and effective dilation (the paper's Figs. 5-7, Table 2).

Modules, one job each:
    capture      the offsets of every deformable layer for a batch (forward hooks), with geometry
    sampling     sampling locations of a layer; an activation traced back through the stack to the image
    dilation     effective dilation of every filter (mean distance between adjacent sampling locations)
    object_size  ground-truth objects (connected class regions) and their size group
    stats        effective dilation by object size over a dataset split
    offset_stats per-layer offset length, out-of-bounds share, mask and effective dilation (logged in training)
    table2       the paper's Table 2 layout in Markdown and JSON
    figures      sampling-location and effective-dilation figures (matplotlib)
    inputs       checkpoint, dataset (Hydra-style overrides) and image preparation for the tools
    runs         the runs of a sweep (summary.json, read by segdcn.ablation.runs) for the ablation plots
"""

from .capture import OffsetRecord, OffsetRecorder, capture_offsets
from .dilation import effective_dilation
from .object_size import SIZE_GROUPS, SizeThresholds, representative_points, size_group_map
from .sampling import Trace, TracedLayer, offsets_at, sampling_locations, trace_sampling_locations
from .stats import DilationTable, background_ids_of, effective_dilation_by_size

__all__ = [
    "SIZE_GROUPS",
    "DilationTable",
    "OffsetRecord",
    "OffsetRecorder",
    "SizeThresholds",
    "Trace",
    "TracedLayer",
    "background_ids_of",
    "capture_offsets",
    "effective_dilation",
    "effective_dilation_by_size",
    "offsets_at",
    "representative_points",
    "sampling_locations",
    "size_group_map",
    "trace_sampling_locations",
]
