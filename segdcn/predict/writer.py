"""The files of one prediction: a palette label PNG, a colour overlay and, for Cityscapes, a labelId PNG.

    <out>/labels/<name>.png       class indices (train ids) as a palette PNG in the dataset's colours
    <out>/overlays/<name>.jpg     the class colours blended over the image
    <out>/label_ids/<name>.png    Cityscapes only: label ids (the benchmark's format), grey PNG

All at the input image's size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segdcn.data.io import write_label
from segdcn.data.labels import flat_palette


class PredictionWriter:
    def __init__(self, out_dir: str | os.PathLike, metadata: dict[str, Any], overlay_alpha: float = 0.5):
        if not 0.0 <= overlay_alpha <= 1.0:
            raise ValueError(f"overlay_alpha={overlay_alpha}; expected a weight in [0, 1]")
        self.out_dir = Path(out_dir)
        colors = [tuple(int(v) for v in c) for c in metadata["palette"]]
        self.palette = flat_palette(colors)
        # index 255 (never predicted, but an ignore value in label files) and beyond: the VOC colours
        self.colors = np.array(self.palette, dtype=np.float32).reshape(256, 3)
        label_ids = metadata.get("label_ids")
        self.label_ids = None if label_ids is None else np.array(label_ids, dtype=np.uint8)
        self.alpha = float(overlay_alpha)

    def paths(self, name: Path) -> dict[str, Path]:
        paths = {
            "label": self.out_dir / "labels" / f"{name}.png",
            "overlay": self.out_dir / "overlays" / f"{name}.jpg",
        }
        if self.label_ids is not None:
            paths["label_ids"] = self.out_dir / "label_ids" / f"{name}.png"
        return paths

    def write(self, name: Path, image: np.ndarray, prediction: np.ndarray) -> dict[str, Path]:
        """image uint8 [H, W, 3], prediction uint8 [H, W] of class indices, both at the input's size."""
        if prediction.shape != image.shape[:2]:
            raise ValueError(f"prediction {prediction.shape} is not at the image's size {image.shape[:2]}")
        paths = self.paths(name)
        for path in paths.values():
            path.parent.mkdir(parents=True, exist_ok=True)
        write_label(paths["label"], prediction, self.palette)
        blend = self.alpha * self.colors[prediction] + (1.0 - self.alpha) * image.astype(np.float32)
        Image.fromarray(np.clip(blend.round(), 0, 255).astype(np.uint8)).save(paths["overlay"], quality=90)
        if self.label_ids is not None:
            Image.fromarray(self.label_ids[prediction]).save(paths["label_ids"])
        return paths
