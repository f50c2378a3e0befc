"""segdcn-predict: label PNGs at the input's size in the dataset's palette, overlays and Cityscapes label ids,
from a checkpoint (PyTorch), its ONNX file (onnxruntime) and its torch.export program, with equal labels;
batching; the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segdcn.config import ConfigError, compose
from segdcn.data.errors import UnreadableFileError
from segdcn.data.labels import SYNTHETIC, cityscapes_labels
from segdcn.data.transforms import build_eval_transform
from segdcn.engine.cityscapes_official import to_label_ids
from segdcn.engine.inference import infer
from segdcn.export import ExportConfigError, MetadataError, export_model
from segdcn.export.exporter import load_trained_model
from segdcn.predict.app import run as predict_run
from segdcn.predict.batches import batches
from segdcn.predict.inputs import PredictInputError, find_images
from tests.helpers import run_python
from tests.model_files import write_checkpoint

# name -> (height, width); the model's window is its 64x64 training crop, so a and c slide, b is whole
IMAGES = {"a.png": (80, 100), "a2.png": (80, 100), "b.jpg": (48, 60), "sub/c.png": (70, 90)}


def write_images(root: Path, sizes: dict[str, tuple[int, int]], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, (height, width) in sizes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / name, quality=95)
    return root


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    """A synthetic-set checkpoint, its ONNX file and program (with metadata), and a Cityscapes checkpoint."""
    root = tmp_path_factory.mktemp("models")
    ckpt = write_checkpoint(root / "synthetic.pt")
    model, train_cfg, _ = load_trained_model(ckpt)
    onnx, program = export_model(
        model, train_cfg, root, formats=["onnx", "torch_export"], name="synthetic", verify=False
    )
    cityscapes = write_checkpoint(root / "cityscapes.pt", "dataset=cityscapes", "dataset.eval.short_side=48", seed=3)
    return {"ckpt": ckpt, "onnx": onnx.path, "program": program.path, "cityscapes": cityscapes}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"), IMAGES)


@pytest.fixture(scope="module")
def predictions(model_files, images, tmp_path_factory) -> dict[str, Path]:
    """`python -m segdcn.predict` on the folder, from the checkpoint, the ONNX file and the program."""
    outs = {}
    for kind in ("ckpt", "onnx", "program"):
        out = tmp_path_factory.mktemp(f"predict_{kind}")
        result = run_python(
            "-m",
            "segdcn.predict",
            f"{kind}={model_files[kind]}",
            f"input={images}",
            f"out={out}",
            "batch_size=2",
            f"hydra.run.dir={out / 'run'}",
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        assert "4 images in" in result.stdout
        outs[kind] = out
    return outs


def label_image(out: Path, name: str) -> Image.Image:
    image = Image.open(out / "labels" / f"{Path(name).with_suffix('')}.png")
    image.load()
    return image


@pytest.fixture(scope="module")
def model(model_files) -> torch.nn.Module:
    return load_trained_model(model_files["ckpt"])[0]


def expected_logits(model: torch.nn.Module, images: Path, name: str) -> torch.Tensor:
    """The PyTorch model's logits [C, H, W] for an input image, as predict computes them: 64x64 windows
    every 42 pixels (2/3 of the window), averaged, at the input's size (no resize for the synthetic set)."""
    image = np.array(Image.open(images / name).convert("RGB"))
    x = build_eval_transform(None)(image, image[..., 0])[0][None]
    with torch.no_grad():
        return infer(model, x, None, mode="slide", window=[64, 64], stride=[42, 42])[0]


def assert_labels_of(labels: np.ndarray, logits: torch.Tensor, what: str) -> None:
    """labels == argmax(logits) wherever the decision is not a numerical tie.

    Bilinear upsampling makes the top-2 margin pass through zero at every class border, so a few pixels
    have margins of 1e-7 (logits ~0.03), where PyTorch and onnxruntime (or two batch sizes) may round
    apart. Pixels with a margin above 1e-4 of the logits' scale must agree; ties must be rare.
    """
    top2 = logits.topk(2, dim=0).values
    decided = ((top2[0] - top2[1]) > 1e-4 * logits.abs().max()).numpy()
    assert decided.mean() > 0.99, what
    np.testing.assert_array_equal(labels[decided], logits.argmax(0).numpy()[decided], err_msg=what)


def test_labels_at_the_input_size_in_the_palette_from_checkpoint_onnx_and_program(predictions, model, images):
    palette = [channel for color in SYNTHETIC.colors for channel in color]
    for name, (height, width) in IMAGES.items():
        stem = Path(name).with_suffix("")
        labels = {}
        for kind, out in predictions.items():
            image = label_image(out, name)
            assert image.mode == "P" and image.size == (width, height), (kind, name)
            assert image.getpalette()[: len(palette)] == palette
            labels[kind] = np.array(image)
            with Image.open(out / "overlays" / f"{stem}.jpg") as overlay:
                assert overlay.size == (width, height) and overlay.mode == "RGB"
            assert not (out / "label_ids").exists()  # label ids are Cityscapes' only
        logits = expected_logits(model, images, name)
        assert_labels_of(labels["ckpt"], logits, f"{name} from the checkpoint")
        assert_labels_of(labels["onnx"], logits, f"{name} from the ONNX file")
        assert_labels_of(labels["program"], logits, f"{name} from the torch.export program")
        # and they part, if at all, on a few ties (on the development machine: on none)
        assert (labels["ckpt"] != labels["onnx"]).mean() < 1e-3, name
        assert (labels["ckpt"] != labels["program"]).mean() < 1e-3, name


def test_an_image_within_the_window_is_labelled_by_one_forward_pass(predictions, model, images):
    """Oracle for b (48x60, inside the 64x64 window): the argmax of the model's logits on the normalised image."""
    image = np.array(Image.open(images / "b.jpg").convert("RGB"))
    x = build_eval_transform(None)(image, image[..., 0])[0][None]
    with torch.no_grad():
        logits = model(x)[0]
    assert_labels_of(np.array(label_image(predictions["ckpt"], "b.jpg")), logits, "b.jpg, one pass")


def predict_cfg(*overrides: str):
    return compose("predict", ["progress=false", *overrides])


def test_cityscapes_gets_label_id_pngs_at_the_input_size(model_files, tmp_path):
    """Resized to the checkpoint's dataset.eval.short_side (48) for the model, written at the input's size."""
    write_images(tmp_path / "in", {"frankfurt_000000_000294_leftImg8bit.png": (64, 128)})
    out = tmp_path / "out"
    summary = predict_run(
        predict_cfg(f"ckpt={model_files['cityscapes']}", f"input={tmp_path / 'in'}", f"out={out}"), out
    )
    assert summary["short_side"] == 48
    labels = np.array(label_image(out, "frankfurt_000000_000294_leftImg8bit"))
    with Image.open(out / "label_ids" / "frankfurt_000000_000294_leftImg8bit.png") as image:
        assert image.mode == "L" and image.size == (128, 64)
        np.testing.assert_array_equal(np.array(image), to_label_ids(labels))  # through cityscapesscripts
    palette = [channel for color in cityscapes_labels().colors for channel in color]
    assert label_image(out, "frankfurt_000000_000294_leftImg8bit").getpalette()[: len(palette)] == palette


def test_batches_hold_consecutive_images_of_one_size(images):
    transform = build_eval_transform(None)
    items = find_images(str(images / "**" / "*.*"))
    assert [str(item.name) for item in items] == ["a", "a2", "b", "sub/c"]
    sizes = [(len(b.items), tuple(b.tensor.shape)) for b in batches(items, transform, batch_size=2)]
    assert sizes == [(2, (2, 3, 80, 100)), (1, (1, 3, 48, 60)), (1, (1, 3, 70, 90))]
    assert [len(b.items) for b in batches(items, transform, batch_size=1)] == [1, 1, 1, 1]


# ---- errors ----


def test_an_unreadable_image_is_named_before_the_model_loads(model_files, tmp_path):
    write_images(tmp_path, {"good.png": (40, 40)})
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(UnreadableFileError, match=r"cannot read 1 input image\(s\): .*broken\.png"):
        predict_run(
            predict_cfg(f"ckpt={model_files['ckpt']}", f"input={tmp_path}", f"out={tmp_path / 'out'}"), tmp_path
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("key", "suffix"), [("onnx", ".onnx"), ("program", ".pt2")])
def test_an_exported_file_without_metadata(key, suffix, model_files, images, tmp_path):
    bare = tmp_path / f"bare{suffix}"
    bare.write_bytes(model_files[key].read_bytes())
    expected = rf"bare\{suffix} has no metadata: expected .*bare\{suffix}\.json next to it"
    with pytest.raises(MetadataError, match=expected):
        predict_run(predict_cfg(f"{key}={bare}", f"input={images}"), tmp_path)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ((), ExportConfigError, r"give exactly one model: ckpt=.*, .*onnx=.* or program=.* \(got none\)"),
        (("onnx={onnx}", "ckpt={ckpt}"), ExportConfigError, r"give exactly one model.*\(got ckpt, onnx\)"),
        (("ckpt={onnx}",), ExportConfigError, r"ckpt=.*synthetic\.onnx is an ONNX file; pass it as onnx="),
        (
            ("ckpt={program}",),
            ExportConfigError,
            r"ckpt=.*synthetic\.pt2 is a torch\.export program; pass it as program=",
        ),
        (
            ("onnx={program}",),
            ExportConfigError,
            r"onnx=.*synthetic\.pt2 is a torch\.export program; pass it as program=",
        ),
        (("program={images}/none.pt2",), FileNotFoundError, r"program=.*none\.pt2: no such file"),
        (("ckpt={ckpt}", "mode=tiles"), ConfigError, r"mode='tiles': expected one of whole, slide"),
        (("ckpt={ckpt}", "input={images}/*.gif"), PredictInputError, r"input=.*\*\.gif: no images found"),
        (("ckpt={ckpt}", "input={images}/missing.png"), PredictInputError, r"missing\.png: no such file or folder"),
    ],
)
def test_bad_settings_name_the_key(overrides, error, message, model_files, images, tmp_path):
    paths = {
        "onnx": model_files["onnx"],
        "program": model_files["program"],
        "ckpt": model_files["ckpt"],
        "images": images,
    }
    args = [o.format(**paths) for o in overrides]
    if not any(a.startswith("input=") for a in args):
        args.append(f"input={images}")
    with pytest.raises(error, match=message):
        predict_run(predict_cfg(*args, f"out={tmp_path / 'out'}"), tmp_path)
