"""archc's table of torchvision's published weights (``archcompiler/data/pretrained.json``, written by
benchmarks/pretrained_table.py from torchvision 0.29.1's metadata): it covers every builder of the zoo,
its file names, hashes and transforms are self-consistent, a sample of its facts equals what
torchvision's documentation prints, and its parameter counts equal archc's own. No torchvision here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import archcompiler
from archcompiler.spec import zoo

TABLE_PATH = Path(archcompiler.__file__).resolve().parent / "data" / "pretrained.json"
TABLE = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
BUILDERS = TABLE["builders"]
ENTRY_KEYS = {"url", "file", "sha256", "transforms", "categories", "num_params", "min_size", "acc1", "acc5",
              "gflops", "file_size_mb", "recipe"}


def entries():
    for name, builder in BUILDERS.items():
        for weights, entry in builder["weights"].items():
            yield f"{name}.{weights}", entry


def test_shape():
    assert list(TABLE) == ["about", "categories", "builders"]
    assert "torchvision 0.29.1" in TABLE["about"] and "torch 2.14.1" in TABLE["about"]
    assert "benchmarks/pretrained_table.py" in TABLE["about"]
    for name, builder in BUILDERS.items():
        assert {"default", "overrides", "weights"} <= set(builder), name
        assert isinstance(builder["overrides"], dict), name
    for key, entry in entries():
        assert ENTRY_KEYS <= set(entry), (key, ENTRY_KEYS - set(entry))
    assert TABLE_PATH.stat().st_size < 400_000


# issue 34's segmentation builders: their COCO_WITH_VOC_LABELS weights (another kind of entry: mIoU, not
# ImageNet accuracy) are not in the table yet
SEGMENTATION = {"fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
                "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"}
# and its video builders (tests/test_video.py): their KINETICS400_V1 weights are not in the table yet either
VIDEO = {"r3d_18", "mc3_18", "r2plus1d_18", "s3d"}


def test_covers_the_zoo():
    names = set(zoo.builders()) - SEGMENTATION - VIDEO
    assert len(names) == 80
    assert set(BUILDERS) == names, (sorted(names - set(BUILDERS)), sorted(set(BUILDERS) - names))
    for name in names:
        assert BUILDERS[name]["weights"], name
        assert BUILDERS[name]["default"] in BUILDERS[name]["weights"], name
        # the builder's overrides are its DEFAULT weights'
        assert BUILDERS[name]["overrides"] == BUILDERS[name]["weights"][BUILDERS[name]["default"]]["overrides"]


def test_files_and_hashes():
    for key, e in entries():
        assert e["url"].startswith("https://download.pytorch.org/models/"), key
        assert e["file"] == e["url"].rsplit("/", 1)[-1], key
        assert re.fullmatch(r"[0-9a-f]{8,}", e["sha256"]), key
        # the hash part of the file name: after the last '-', before the extension (torch.hub's check_hash)
        assert e["file"].rsplit("-", 1)[1].split(".", 1)[0] == e["sha256"], key
        assert re.search(r"-([a-f0-9]*)\.", e["file"]).group(1) == e["sha256"], key


def test_transforms():
    for key, e in entries():
        t = e["transforms"]
        assert isinstance(t["resize"], int) and isinstance(t["crop"], int), key
        assert t["resize"] >= t["crop"] > 0, key
        assert t["interpolation"] in ("bilinear", "bicubic", "nearest"), key
        assert len(t["mean"]) == 3 and len(t["std"]) == 3 and all(s > 0 for s in t["std"]), key
        assert len(e["min_size"]) == 2 and all(0 < s <= t["crop"] for s in e["min_size"]), key


def test_categories():
    cats = TABLE["categories"]["imagenet1k"]
    assert len(cats) == 1000 and len(set(cats)) == 1000
    assert cats[:2] == ["tench", "goldfish"] and cats[-1] == "toilet tissue"
    refs = {e["categories"] for _, e in entries()}
    assert refs <= set(TABLE["categories"]) | {None}
    # only vgg16's feature-extraction weights have none (their classifier holds no values)
    assert [k for k, e in entries() if e["categories"] is None] == ["vgg16.IMAGENET1K_FEATURES"]


def test_facts_from_torchvisions_documentation():
    r50 = BUILDERS["resnet50"]
    assert r50["default"] == "IMAGENET1K_V2"
    assert r50["weights"]["IMAGENET1K_V1"]["file"] == "resnet50-0676ba61.pth"
    assert r50["weights"]["IMAGENET1K_V1"]["sha256"] == "0676ba61"
    assert r50["weights"]["IMAGENET1K_V2"]["file"] == "resnet50-11ad3fa6.pth"
    assert (r50["weights"]["IMAGENET1K_V1"]["acc1"], r50["weights"]["IMAGENET1K_V1"]["acc5"]) == (76.13, 92.862)
    assert (r50["weights"]["IMAGENET1K_V2"]["acc1"], r50["weights"]["IMAGENET1K_V2"]["acc5"]) == (80.858, 95.434)
    assert r50["weights"]["IMAGENET1K_V2"]["transforms"] == {
        "resize": 232, "crop": 224, "interpolation": "bilinear",
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    g = BUILDERS["googlenet"]
    assert g["default"] == "IMAGENET1K_V1" and g["weights"]["IMAGENET1K_V1"]["file"] == "googlenet-1378be20.pth"
    assert g["overrides"] == {"transform_input": True, "aux_logits": False}
    assert BUILDERS["inception_v3"]["overrides"] == {"transform_input": True}
    t = BUILDERS["inception_v3"]["weights"]["IMAGENET1K_V1"]["transforms"]
    assert (t["resize"], t["crop"]) == (342, 299)
    v = BUILDERS["vit_b_16"]
    assert v["default"] == "IMAGENET1K_V1" and v["overrides"] == {}
    t = v["weights"]["IMAGENET1K_V1"]["transforms"]
    assert (t["resize"], t["crop"], t["interpolation"]) == (256, 224, "bilinear")
    swag = v["weights"]["IMAGENET1K_SWAG_E2E_V1"]
    assert swag["overrides"] == {"image_size": 384} and swag["min_size"] == [384, 384]
    assert (swag["transforms"]["resize"], swag["transforms"]["crop"], swag["transforms"]["interpolation"]) == (
        384, 384, "bicubic")
    assert swag["license"] == "https://github.com/facebookresearch/SWAG/blob/main/LICENSE"
    h = BUILDERS["vit_h_14"]
    assert h["default"] == "IMAGENET1K_SWAG_E2E_V1" and h["overrides"] == {"image_size": 518}
    # nothing else changes the builder's arguments
    assert {n for n, b in BUILDERS.items() if any(e["overrides"] for e in b["weights"].values())} == {
        "googlenet", "inception_v3", "vit_b_16", "vit_l_16", "vit_h_14"}


@pytest.mark.parametrize("name, weights", [
    ("resnet50", "IMAGENET1K_V2"),
    ("googlenet", "IMAGENET1K_V1"),         # torchvision counts it without its auxiliary heads
    ("inception_v3", "IMAGENET1K_V1"),      # ... and this one with them (torchvision keeps them)
    ("vit_b_16", "IMAGENET1K_SWAG_E2E_V1"),  # at 384x384: a longer position embedding
    ("efficientnet_b3", "IMAGENET1K_V1"),
])
def test_num_params_equal_archcs(name, weights):
    entry = BUILDERS[name]["weights"][weights]
    size = entry["overrides"].get("image_size")
    total = archcompiler.analyze(archcompiler.load_spec(name, {"input": [3, size, size]} if size else None))["total"]
    heads = name == "inception_v3"
    assert entry["num_params"] == (total["with_training_heads"]["params"] if heads else total["params"])
    if name == "googlenet":
        assert entry["num_params"] != total["with_training_heads"]["params"]
