"""The shipped GoogLeNet specs against independent sources: the paper's Table 1 and the team's
torchvision reference numbers (tests/data/README.md)."""

from __future__ import annotations

import pytest
from conftest import SPECS

from archcompiler import analyze, check, load_spec

PAPER = SPECS / "googlenet.yaml"
TORCHVISION = SPECS / "googlenet-torchvision.yaml"

# Table 1 of the paper: name, output size (H, W, C), depth, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
TABLE1 = [
    ("conv1", (112, 112, 64), 1, None),
    ("pool1", (56, 56, 64), 0, None),
    ("conv2", (56, 56, 192), 2, None),
    ("pool2", (28, 28, 192), 0, None),
    ("inception_3a", (28, 28, 256), 2, (64, 96, 128, 16, 32, 32)),
    ("inception_3b", (28, 28, 480), 2, (128, 128, 192, 32, 96, 64)),
    ("pool3", (14, 14, 480), 0, None),
    ("inception_4a", (14, 14, 512), 2, (192, 96, 208, 16, 48, 64)),
    ("inception_4b", (14, 14, 512), 2, (160, 112, 224, 24, 64, 64)),
    ("inception_4c", (14, 14, 512), 2, (128, 128, 256, 24, 64, 64)),
    ("inception_4d", (14, 14, 528), 2, (112, 144, 288, 32, 64, 64)),
    ("inception_4e", (14, 14, 832), 2, (256, 160, 320, 32, 128, 128)),
    ("pool4", (7, 7, 832), 0, None),
    ("inception_5a", (7, 7, 832), 2, (256, 160, 320, 32, 128, 128)),
    ("inception_5b", (7, 7, 1024), 2, (384, 192, 384, 48, 128, 128)),
    ("pool5", (1, 1, 1024), 0, None),
    ("dropout", (1, 1, 1024), 0, None),
    ("fc", (1, 1, 1000), 1, None),
    ("prob", (1, 1, 1000), 0, None),
]
COLUMNS = ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")


@pytest.fixture(scope="module")
def paper():
    return analyze(PAPER)


def test_every_row_of_table_1_has_the_papers_output_size_and_depth(paper):
    rows = {r["name"]: r for r in paper["rows"]}
    for name, (h, w, c), depth, columns in TABLE1:
        row = rows[name]
        out = row["output"] if len(row["output"]) == 3 else [row["output"][0], 1, 1]
        assert tuple(out) == (c, h, w), name
        assert row["depth"] == depth, name
        if columns:
            assert tuple(row["columns"][k] for k in COLUMNS) == columns, name


def test_inception_rows_read_like_the_table():
    spec = load_spec(PAPER)
    table_rows = [name for name in spec.rows if name in spec.instances and spec.instances[name].from_table]
    assert table_rows == [n for n, *_ in TABLE1 if n.startswith("inception")]
    assert all(spec.instances[n].block == "inception" for n in table_rows)


def test_the_paper_counts_1_5_billion_multiply_adds(paper):
    # "... so that the they [sic] do not end-up to be a purely academic curiosity, but could be put to
    # real world use, even on large datasets, at a reasonable cost ... a computational budget of 1.5
    # billion multiply-adds at inference time"
    assert 1.5e9 <= paper["total"]["macs"] <= 1.6e9
    assert paper["total"]["flops"] == 2 * paper["total"]["macs"]


def test_depth_22_and_27_with_pooling(paper):
    assert paper["depth"] == {"with_params": 22, "with_pooling": 27}


def test_aux_heads_are_training_only_and_shaped_as_the_paper_says():
    fine = analyze(PAPER, depth=2)
    rows = {r["name"]: r for r in fine["rows"]}
    assert rows["aux1/pool"]["output"] == [512, 4, 4]      # "4x4x512 output for the (4a) stage"
    assert rows["aux2/pool"]["output"] == [528, 4, 4]      # "4x4x528 for the (4d) stage"
    assert rows["aux1/conv"]["output"] == [128, 4, 4]
    assert rows["aux1/fc1"]["output"] == [1024]
    assert all(r["training_only"] for n, r in rows.items() if n.startswith("aux"))
    spec = load_spec(PAPER)
    assert {o.name: (o.weight, o.training_only) for o in spec.outputs.values()} == {
        "main": (1.0, False), "aux1": (0.3, True), "aux2": (0.3, True)}


def test_paper_spec_has_lrn_and_no_ceil_mode():
    spec = load_spec(PAPER)
    assert [layer.name for layer in spec.layers if layer.op == "lrn"] == ["norm1", "norm2"]
    pools = [layer.spec for layer in spec.layers if layer.op == "max_pool"]
    assert pools and not any(p.ceil_mode for p in pools)


def test_check_reports_the_papers_inconsistent_cells_and_nothing_else():
    found = check(PAPER)
    cells = {(d.path, d.message.split(":")[0]) for d in found}
    assert ("conv1", "params") in cells and ("conv1", "ops") in cells       # 2.7K / 34M
    assert ("inception_4c", "params") in cells                             # 463K vs 498K
    assert ("inception_5a", "params") in cells and ("inception_5a", "ops") in cells
    assert not [d for d in found if d.severity == "error"]                  # every output size agrees
    assert len(found) == 5
    conv1 = next(d for d in found if d.path == "conv1" and d.message.startswith("params"))
    assert "2.7K" in conv1.message and "9,472" in conv1.message and conv1.line > 0


def test_torchvision_parameter_counts(torchvision_reference):
    report = analyze(TORCHVISION)
    assert report["total"]["params"] == 6_624_904
    assert report["total"]["with_training_heads"]["params"] == 13_004_888 == torchvision_reference["googlenet"]["params"]


def test_torchvision_flops_equal_flopcountermode_reference():
    assert analyze(TORCHVISION)["total"]["flops"] == 2_996_752_384


def test_torchvision_spec_keeps_the_papers_output_sizes():
    assert not [d for d in check(TORCHVISION) if d.severity == "error"]


def test_torchvision_differences_from_the_paper():
    spec = load_spec(TORCHVISION)
    assert not [layer for layer in spec.layers if layer.op == "lrn"]
    convs = [layer.spec for layer in spec.layers if layer.op == "conv"]
    assert all(c.norm_spec() is not None and c.norm_spec().eps == 0.001 and not c.has_bias() for c in convs)
    assert all(layer.spec.ceil_mode for layer in spec.layers if layer.op == "max_pool")
    assert spec.layer("inception_3a/5x5").spec.kernel == 3
    assert spec.layer("pool4").spec.kernel == 2
    assert spec.layer("dropout").spec.p == 0.2
