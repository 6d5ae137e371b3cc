"""Segmentation data (training/masks.py; issue #34): a network whose main output is a map trains on
images and masks, ``evaluate`` gives the mean IoU (checked against scikit-learn's), ``predict`` writes
a coloured mask per image."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import run_archc

torch = pytest.importorskip("torch")

import archcompiler  # noqa: E402
from archcompiler import RunError  # noqa: E402
from archcompiler.training.data import Preprocess  # noqa: E402
from archcompiler.training.masks import IGNORE_INDEX, MaskFolder, palette, scan_masks  # noqa: E402

# a small fully convolutional network: the classes at half resolution, upsampled to the input's
SPEC = """name: tiny_seg
input: [3, 32, 32]
params:
  num_classes: 3
layers:
  - {name: conv1, op: conv, out: 16, kernel: 3, padding: 1, norm: batch_norm, act: relu}
  - {name: conv2, op: conv, out: 32, kernel: 3, stride: 2, padding: 1, norm: batch_norm, act: relu}
  - {name: conv3, op: conv, out: 32, kernel: 3, padding: 1, norm: batch_norm, act: relu}
  - {name: classifier, op: conv, out: num_classes, kernel: 1}
  - {name: upsample, op: interpolate, scale: 2, mode: bilinear}
train: {optimizer: adam, lr: 0.01, epochs: 4, batch_size: 16, schedule: none, seed: 0}
data: {random_resized_crop: false}
"""


def make_shapes(root: Path, n: int, seed: int) -> Path:
    """A red square (class 1, its outline not labelled: 255) and a blue disc (class 2) on a dark
    background (class 0), at random places on 48 x 40 images."""
    from PIL import Image, ImageDraw

    r = random.Random(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img, mask = Image.new("RGB", (48, 40), (r.randint(0, 60),) * 3), Image.new("L", (48, 40), 0)
        draw, label = ImageDraw.Draw(img), ImageDraw.Draw(mask)
        x, y = r.randint(0, 28), r.randint(0, 20)
        draw.rectangle([x, y, x + 15, y + 15], fill=(220, 40, 40))
        label.rectangle([x, y, x + 15, y + 15], fill=1, outline=255)
        x, y = r.randint(0, 30), r.randint(0, 22)
        draw.ellipse([x, y, x + 14, y + 14], fill=(40, 40, 220))
        label.ellipse([x, y, x + 14, y + 14], fill=2)
        img.save(root / "images" / f"{i:03d}.png")
        mask.save(root / "masks" / f"{i:03d}.png")
    (root / "classes.txt").write_text("background\nsquare\ndisc\n")
    return root


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("shapes")
    make_shapes(base / "train", 64, 0)
    make_shapes(base / "val", 16, 1)
    (base / "seg.yaml").write_text(SPEC)
    return base


@pytest.mark.slow
def test_train_evaluate_and_predict_a_segmentation_network_through_the_command_line(shapes, tmp_path):
    from PIL import Image
    from sklearn.metrics import jaccard_score

    result = run_archc("train", str(shapes / "seg.yaml"), "--data", str(shapes / "train"), "--val",
                       str(shapes / "val"), "--workers", "0", "--out", str(tmp_path / "run"), "-q")
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[5] == "val_miou" and len(rows) == 5
    assert "3 classes (background, square, disc)" in result.stderr
    assert "best: validation mean IoU " in result.stderr         # the best epoch chosen by it

    result = run_archc("evaluate", str(tmp_path / "run" / "last.pt"), "--data", str(shapes / "val"), "--format",
                       "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["classes"] == ["background", "square", "disc"] and report["images"] == 16
    assert report["miou"] > 0.5          # four epochs learn the shapes (the square's outline is not counted)

    # the same numbers from scikit-learn, on the labelled pixels of the network's own predictions
    model = archcompiler.load_model(tmp_path / "run" / "last.pt").eval()
    pre = Preprocess.from_spec(archcompiler.load_spec(shapes / "seg.yaml"))
    _, pairs = scan_masks(shapes / "val", 3)
    data = MaskFolder(pairs, pre, train=False, seed=0)
    truth, predicted = [], []
    with torch.no_grad():
        for i in range(len(data)):
            x, y, _ = data[i]
            p = model(x[None])[0].argmax(0)
            known = y != IGNORE_INDEX
            truth += y[known].tolist()
            predicted += p[known].tolist()
    iou = jaccard_score(truth, predicted, average=None, labels=[0, 1, 2])
    assert [report["iou"][c] for c in report["classes"]] == pytest.approx(list(iou), abs=1e-9)
    assert report["miou"] == pytest.approx(iou.mean(), abs=1e-9)
    assert report["pixels"] == len(truth)

    # a coloured mask per image, of the image's size, its values the classes
    result = run_archc("predict", str(tmp_path / "run" / "last.pt"), str(shapes / "val" / "images" / "000.png"),
                       "--masks", str(tmp_path / "masks"))
    assert result.returncode == 0, result.stderr
    assert "mask: " in result.stdout and "background" in result.stdout
    mask = Image.open(tmp_path / "masks" / "000.png")
    assert mask.mode == "P" and mask.size == (48, 40) and mask.getpalette()[:9] == palette()[:9]
    assert set(mask.tobytes()) <= {0, 1, 2}


def test_an_image_and_its_mask_go_through_the_same_crop_and_flip(tmp_path):
    """The image's colour says its class (drawn in VOC's palette, resampled by nearest neighbour): after a
    random crop and flip, every pixel's colour still names the class its mask gives."""
    from PIL import Image

    root = tmp_path / "d"
    make_shapes(root, 6, 3)
    colours = palette()
    for path in sorted((root / "masks").iterdir()):
        mask = Image.open(path)
        img = mask.point(lambda v: 0 if v == 255 else v).convert("P")
        img.putpalette(colours)
        img.convert("RGB").save(root / "images" / path.name)
    pre = Preprocess(size=24, resize=24, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="nearest",
                     random_resized_crop=True, min_scale=0.3, horizontal_flip=True)
    data = MaskFolder(scan_masks(root, 3)[1], pre, train=True, seed=5)
    rgb = torch.tensor([colours[3 * k: 3 * k + 3] for k in range(3)], dtype=torch.float32) / 255
    for epoch in range(3):
        data.epoch = epoch
        for i in range(len(data)):
            x, y, _ = data[i]
            assert x.shape == (3, 24, 24) and y.shape == (24, 24)
            known = y != IGNORE_INDEX
            nearest = ((x.permute(1, 2, 0)[..., None, :] - rgb).abs().sum(-1)).argmin(-1)
            assert torch.equal(nearest[known], y[known])


def test_what_a_mask_folder_lacks_is_said(tmp_path):
    root = make_shapes(tmp_path / "d", 3, 0)
    (root / "masks" / "001.png").unlink()
    with pytest.raises(RunError, match="1 image.* have no mask, first 001.png"):
        scan_masks(root, 3)
    with pytest.raises(RunError, match="names 3 classes, the network's output has 4"):
        scan_masks(make_shapes(tmp_path / "e", 2, 0), 4)
    with pytest.raises(RunError, match="has no images/ and masks/ folders"):
        scan_masks(tmp_path, 3)
    # an RGB mask, or one of another size, is unreadable: skipped and counted, as an unreadable image is
    from PIL import Image

    e = tmp_path / "e"
    Image.new("RGB", (48, 40)).save(e / "masks" / "000.png")
    Image.new("L", (10, 10)).save(e / "masks" / "001.png")
    data = MaskFolder(scan_masks(e, 3)[1], Preprocess(16, 16, (0, 0, 0), (1, 1, 1)), train=False, seed=0)
    assert data[0][0] is None and data[1][0] is None


@pytest.mark.slow
def test_a_zoo_segmentation_network_trains_on_masks_and_its_checkpoint_loads_again(shapes, tmp_path):
    # LR-ASPP (torchvision's dict outputs) at 64 x 64 for three classes, one epoch: its checkpoint's spec,
    # from which the head's stale `dropout` parameter of MobileNetV3 has gone, loads on its own
    result = run_archc("train", "lraspp_mobilenet_v3_large", "--set", "input=[3,64,64]", "--set", "num_classes=3",
                       "--data", str(shapes / "train"), "--val", str(shapes / "val"), "--epochs", "1",
                       "--batch-size", "16", "--workers", "0", "--out", str(tmp_path / "run"), "-q")
    assert result.returncode == 0, result.stderr
    assert "dropout" not in archcompiler.load_spec("lraspp_mobilenet_v3_large").document["params"]
    result = run_archc("evaluate", str(tmp_path / "run" / "last.pt"), "--data", str(shapes / "val"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("lraspp_mobilenet_v3_large: mean IoU ")
    model = archcompiler.load_model(tmp_path / "run" / "last.pt").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert isinstance(out, dict) and list(out) == ["out"] and out["out"].shape == (1, 3, 64, 64)
