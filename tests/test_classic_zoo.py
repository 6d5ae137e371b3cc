"""AlexNet, VGG (Table 1, configurations A, B, D, E, with and without BatchNorm), SqueezeNet (1.0 and
1.1) and DenseNet (121, 161, 169, 201), each family one spec written as its paper's table (tests/test_zoo.py checks their builders against
torchvision: keys, parameters, FLOPs and logits)."""

from __future__ import annotations

import pytest
from conftest import SPECS

import archcompiler
from archcompiler import SpecError


def test_vgg16_spec_and_the_tables_column_d_agree():
    a = archcompiler.analyze(SPECS / "vgg16.yaml")["total"]
    b = archcompiler.analyze(SPECS / "vgg.yaml", overrides={"config": "D"})["total"]
    assert (a["params"], a["flops"]) == (b["params"], b["flops"])


# ----------------------------------------------------------------------------- the papers' tables

def test_vgg_is_written_as_table_1():
    spec = archcompiler.load_spec(SPECS / "vgg.yaml", overrides={"config": "E"})
    assert [spec.instances[r].args["repeat"] for r in ("conv1", "conv2", "conv3", "conv4", "conv5")] == [2, 2, 4, 4, 4]
    convs = [layer for layer in spec.layers if layer.op == "conv"]
    assert len(convs) + 3 == 19 and all(c.spec.kernel == 3 for c in convs)         # 19 weight layers
    assert not any(layer.op == "batch_norm" for layer in spec.layers)
    bn = archcompiler.load_spec(SPECS / "vgg.yaml", overrides={"config": "E", "batch_norm": True})
    assert sum(layer.op == "batch_norm" for layer in bn.layers) == 16


@pytest.mark.parametrize("config, millions", [("A", 133), ("B", 133), ("D", 138), ("E", 144)])
def test_vgg_parameter_counts_are_the_papers_table_2(config, millions):
    params = archcompiler.analyze(SPECS / "vgg.yaml", overrides={"config": config})["total"]["params"]
    assert round(params / 1e6) == millions


def test_a_configuration_that_is_no_column_is_located():
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(SPECS / "vgg.yaml", overrides={"config": "C"})
    assert "is not one of the variants" in str(info.value)


def test_squeezenet_claims_are_the_papers_and_check_reports_version_1_1():
    assert archcompiler.check(archcompiler.load_spec(SPECS / "squeezenet.yaml")) == []
    found = archcompiler.check(archcompiler.load_spec(SPECS / "squeezenet.yaml", overrides={"version": 1.1}))
    assert {d.path for d in found} == {"conv1", "fire2"} and all(d.severity == "warning" for d in found)


def test_squeezenet_fire_module_reads_squeeze_and_concatenates_both_expands():
    spec = archcompiler.load_spec(SPECS / "squeezenet.yaml")
    assert spec.layer("fire2/expand3x3").inputs == ("fire2/squeeze",)
    assert spec.layer("fire2/output").inputs == ("fire2/expand1x1", "fire2/expand3x3")
    names = {layer.name for layer in spec.layers}
    assert {"maxpool4", "maxpool8"} <= names and not {"maxpool3", "maxpool5"} & names
    v11 = {layer.name for layer in archcompiler.load_spec(SPECS / "squeezenet.yaml", overrides={"version": 1.1}).layers}
    assert {"maxpool3", "maxpool5"} <= v11 and not {"maxpool4", "maxpool8"} & v11


def test_densenet_block_concatenates_every_layers_features():
    spec = archcompiler.load_spec(SPECS / "densenet.yaml")
    assert [spec.instances[f"denseblock{b}"].args["repeat"] for b in range(1, 5)] == [6, 12, 24, 16]
    # each dense layer reads the concatenation of the block's input and all the layers before it
    assert spec.layer("denseblock1/1/norm1").inputs == ("denseblock1/0/concat",)
    assert spec.layer("denseblock1/1/concat").inputs == ("denseblock1/0/concat", "denseblock1/1/conv2")
    rows = {r["name"]: r for r in archcompiler.analyze(spec)["rows"]}
    # Table 1's output sizes, with the channels k = 32 gives: 64 + 6 x 32, halved by each transition
    assert rows["denseblock1"]["output"] == [256, 56, 56]
    assert rows["transition1"]["output"] == [128, 28, 28]
    assert rows["denseblock3"]["output"] == [1024, 14, 14]
    assert rows["transition3"]["output"] == [512, 7, 7]
    assert rows["denseblock4"]["output"] == [1024, 7, 7]


# ----------------------------------------------------------------------------- rename's {index}

def test_a_rename_index_numbers_what_the_pattern_matches_in_network_order():
    from archcompiler.backends.torch.naming import module_paths

    spec = archcompiler.load_spec(SPECS / "alexnet.yaml")
    nodes = ["input", "conv1", "conv1/relu", "pool1", "conv2", "conv2/relu", "drop6", "fc6/flatten", "fc6"]
    paths = module_paths(spec, nodes)
    assert [paths[n] for n in ("conv1", "conv1/relu", "pool1", "conv2")] == [
        "features.0", "features.1", "features.2", "features.3"]
    assert (paths["drop6"], paths["fc6"], paths["fc6/flatten"]) == ("classifier.0", "classifier.1", "fc6.flatten")


@pytest.mark.parametrize("replacement, message", [
    ("features.{idx}", "may only use 'index'"),
    ("features.{index +}", "cannot parse"),
    ("features.{index", "unbalanced braces"),
])
def test_a_wrong_rename_template_is_located(replacement, message):
    text = ("name: t\ninput: [3, 8, 8]\nlayers:\n  - {name: c, op: conv, out: 4, kernel: 1}\n"
            f"torch:\n  rename:\n    - ['^c$', '{replacement}']\n")
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(text)
    d = info.value.errors[0]
    assert message in d.message and d.line == 7
