"""Inception-v3 written as its paper's Table 1 (specs/inception_v3.yaml), exact to torchvision's
inception_v3 (tests/data/torchvision_inception.json, tests/data/README.md): state_dict keys in order
with their shapes (the training-only AuxLogits included), parameter count, FLOPs and logits; and
the table itself: the paper's output sizes, the factorised 1 x n / n x 1 convolutions, the
auxiliary head used in training only."""

from __future__ import annotations

import json

import pytest
from conftest import DATA, SPECS, meta_layout, recipe_input

import archcompiler

SPEC = SPECS / "inception_v3.yaml"


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((DATA / "torchvision_inception.json").read_text())["builders"]["inception_v3"]


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    return {r["name"]: r for r in archcompiler.analyze(SPEC)["rows"]}


# ----------------------------------------------------------------------------- torchvision's layout
# (tests/test_zoo.py checks keys, params, FLOPs and logits against torchvision's for every builder)

def test_params_and_flops_are_torchvisions_own_figures(reference):
    total = archcompiler.analyze(SPEC)["total"]
    # torchvision counts the auxiliary head's parameters; FlopCounterMode ran in eval mode, without it
    assert total["with_training_heads"]["params"] == reference["tv_meta"]["num_params"]
    assert round(total["macs"] / 1e9, 3) == reference["tv_meta"]["gflops"]      # torchvision's GFLOPS are MACs


def test_aux_logits_and_factorised_kernels_sit_where_torchvision_has_them():
    keys, _ = meta_layout(SPEC)
    names = [k for k, _ in keys]
    # AuxLogits sits between Mixed_6e and Mixed_7a, where torchvision registers it
    assert names.index("AuxLogits.conv0.conv.weight") > names.index("Mixed_6e.branch_pool.bn.num_batches_tracked")
    assert names.index("AuxLogits.fc.bias") < names.index("Mixed_7a.branch3x3_1.conv.weight")
    shapes = dict(map(tuple, ([k, tuple(s)] for k, s in keys)))
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_6b.branch7x7_3.conv.weight"] == (192, 128, 7, 1)
    assert shapes["Mixed_7b.branch3x3_2a.conv.weight"] == (384, 384, 1, 3)
    assert shapes["Mixed_7b.branch3x3_2b.conv.weight"] == (384, 384, 3, 1)


@pytest.mark.slow
def test_training_mode_returns_the_auxiliary_logits_too():
    torch = pytest.importorskip("torch")
    model = archcompiler.build(SPEC, seed=0).train()
    out = model(recipe_input((3, 299, 299)))
    assert [tuple(t.shape) for t in out] == [(2, 1000), (2, 1000)]
    with torch.no_grad():
        assert model.eval()(recipe_input((3, 299, 299))).shape == (2, 1000)


# ----------------------------------------------------------------------------- the paper's table

def test_table_1_output_sizes(rows):
    # Table 1 prints each row's input size; a row's output is the size on the row below it
    expected = {
        "Conv2d_1a_3x3": [32, 149, 149], "Conv2d_2a_3x3": [32, 147, 147], "Conv2d_2b_3x3": [64, 147, 147],
        "maxpool1": [64, 73, 73], "maxpool2": [192, 35, 35],
        "Mixed_6a": [768, 17, 17],          # 3 x Inception (Figure 5) and the grid reduction
        "Mixed_7a": [1280, 8, 8],           # 5 x Inception (Figure 6) and the grid reduction
        "Mixed_7c": [2048, 8, 8],           # 2 x Inception (Figure 7)
        "avgpool": [2048, 1, 1], "fc": [1000], "prob": [1000],
    }
    assert {name: rows[name]["output"] for name in expected} == expected
    spec = archcompiler.load_spec(SPEC)
    assert {n for n in spec.rows if spec.row_claims(n) is not None and spec.row_claims(n).output} == set(expected)
    assert archcompiler.check(spec) == []


def test_torchvisions_stem_departs_from_the_printed_table(rows):
    # the paper: conv 3x3/1 -> 71x71x80, conv 3x3/2 -> 35x35x192, conv 3x3/1 -> 35x35x288;
    # torchvision: a 1x1 conv, a 3x3/1 conv and a 3x3/2 max pool (so these rows carry no output claim)
    assert rows["Conv2d_3b_1x1"]["output"] == [80, 73, 73] and rows["Conv2d_3b_1x1"]["patch"] == "1x1/1"
    assert rows["Conv2d_4a_3x3"]["output"] == [192, 71, 71]
    assert rows["Mixed_5b"]["input"] == [192, 35, 35]


def test_the_modules_are_the_papers_figures():
    spec = archcompiler.load_spec(SPEC)
    blocks = {name: spec.instances[name].block for name in spec.instances}
    assert [n for n, b in blocks.items() if b == "inception_a"] == ["Mixed_5b", "Mixed_5c", "Mixed_5d"]
    assert [n for n, b in blocks.items() if b == "inception_c"] == ["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]
    assert [n for n, b in blocks.items() if b == "inception_e"] == ["Mixed_7b", "Mixed_7c"]
    assert [spec.instances[f"Mixed_5{c}"].args["pool_features"] for c in "bcd"] == [32, 64, 64]
    assert [spec.instances[f"Mixed_6{c}"].args["channels_7x7"] for c in "bcde"] == [128, 160, 160, 192]
    # Figure 6: a 7x7 factorised into 1x7 and 7x1, padded to keep 17x17
    conv = spec.layer("Mixed_6c/branch7x7dbl_3").spec
    assert (conv.kernel, conv.padding) == ([1, 7], [0, 3])
    # Figure 7: the 1x3 and 3x1 branches read the same layer and are concatenated (filter banks expanded)
    assert spec.layer("Mixed_7b/branch3x3_2a").inputs == spec.layer("Mixed_7b/branch3x3_2b").inputs == (
        "Mixed_7b/branch3x3_1",)
    assert spec.layer("Mixed_7b/output").inputs == (
        "Mixed_7b/branch1x1", "Mixed_7b/branch3x3_2a", "Mixed_7b/branch3x3_2b",
        "Mixed_7b/branch3x3dbl_3a", "Mixed_7b/branch3x3dbl_3b", "Mixed_7b/branch_pool")
    # BasicConv2d: no bias, BatchNorm with eps 0.001, ReLU
    stem = spec.layer("Conv2d_1a_3x3").spec
    assert (stem.has_bias(), stem.norm_spec().eps, stem.act) == (False, 0.001, "relu")


def test_the_auxiliary_head_is_training_only(rows):
    spec = archcompiler.load_spec(SPEC)
    assert spec.outputs["aux"].training_only and not spec.outputs["main"].training_only
    aux = rows["AuxLogits"]
    assert aux["training_only"] and aux["input"] == [768, 17, 17] and aux["output"] == [1000]
    fine = {r["name"]: r for r in archcompiler.analyze(SPEC, depth=2)["rows"]}
    assert fine["AuxLogits/pool"]["output"] == [768, 5, 5] and fine["AuxLogits/conv1"]["output"] == [768, 1, 1]
    total = archcompiler.analyze(SPEC)["total"]
    assert total["with_training_heads"]["params"] - total["params"] == aux["params"]


def test_torchvisions_builder_name_loads_the_spec():
    by_name = archcompiler.load_spec("inception_v3")
    assert by_name.name == "inception_v3" and by_name.input == archcompiler.load_spec(SPEC).input
