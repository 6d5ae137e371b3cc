"""torchvision's six segmentation builders (issue #34): FCN (specs/fcn.yaml), DeepLabv3 (specs/deeplabv3.yaml,
specs/deeplabv3_mobilenet_v3.yaml) and LR-ASPP (specs/lraspp.yaml), each extending the classification spec of
its backbone (ResNet with `output_stride` 8, MobileNetV3-Large `dilated`), checked by name against
torchvision's recorded facts (tests/data/torchvision_segmentation.json): state_dict keys in order with their
shapes, the parameter count and FLOPs (the torch-free analysis), and the outputs `out` and `aux` (LR-ASPP:
`out`) under the recipe weights, one forward per builder. The ResNet-101 ones run in the slow tier."""

from __future__ import annotations

import json

import pytest
from conftest import DATA, meta_layout, recipe_weights, run_archc

import archcompiler
from archcompiler.spec.layers import pair

REFERENCE = json.loads((DATA / "torchvision_segmentation.json").read_text())["builders"]
BUILDERS = list(REFERENCE)
SLOW = {"fcn_resnet101", "deeplabv3_resnet101"}       # ~90 GFLOPs a forward


def _tiered(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def test_the_six_builders_are_names_of_the_zoo():
    from archcompiler.spec import zoo

    assert {n: zoo.find(n).file.name for n in BUILDERS} == {
        "fcn_resnet50": "fcn.yaml", "fcn_resnet101": "fcn.yaml", "deeplabv3_resnet50": "deeplabv3.yaml",
        "deeplabv3_resnet101": "deeplabv3.yaml", "deeplabv3_mobilenet_v3_large": "deeplabv3_mobilenet_v3.yaml",
        "lraspp_mobilenet_v3_large": "lraspp.yaml"}


@pytest.mark.parametrize("builder", BUILDERS)
def test_keys_params_and_flops_equal_torchvision(builder):
    """The analysis (no torch) gives torchvision's parameters and FLOPs (FlopCounterMode counts the
    convolutions: the bilinear upsampling and the pools are not in it, nor in archc's FLOPs); the module,
    built on the meta device, torchvision's state_dict keys in order with their shapes."""
    ref = REFERENCE[builder]
    report = archcompiler.analyze(builder)
    total = report["total"]
    assert report["input"] == ref["input"] == [3, 224, 224]
    assert (total["params"], total["with_training_heads"]["params"], total["flops"]) == \
        (ref["params"], ref["params"], ref["flops"])
    keys, params = meta_layout(builder)
    assert keys == ref["keys"]
    assert params == ref["params"]


@pytest.mark.parametrize("builder", _tiered(BUILDERS))
def test_outputs_equal_torchvision(builder):
    """One forward in evaluation mode under the recipe weights: each output's shape, its 64 recorded values
    within 1e-4 of the largest of them, and its sum and sum of absolute values within 1e-5 of the latter (on
    average an element within 1e-5 of the mean absolute value)."""
    torch = pytest.importorskip("torch")
    ref = REFERENCE[builder]
    model = archcompiler.build(builder, weights=recipe_weights(ref["keys"])).eval()
    x = torch.randn(1, *ref["input"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, dict)              # as torchvision's: model(x)["out"], LR-ASPP's one output too
    got = y
    assert list(got) == list(ref["outputs"])
    for name, digest in ref["outputs"].items():
        v = got[name].double()
        assert list(v.shape) == digest["shape"], name
        expected = torch.tensor(digest["values"], dtype=torch.float64)
        scale = expected.abs().max().item()
        assert (v.flatten()[digest["at"]] - expected).abs().max().item() <= 1e-4 * scale, name
        assert abs(v.sum().item() - digest["sum"]) <= 1e-5 * digest["abs_sum"], name
        assert abs(v.abs().sum().item() - digest["abs_sum"]) <= 1e-5 * digest["abs_sum"], name


def test_out_and_aux_are_both_computed_in_evaluation_aux_weighted_half():
    """torchvision's model returns `aux` in evaluation too; its training reference weights aux's loss 0.5."""
    outputs = {n: {k: (o.layer, o.weight, o.training_only) for k, o in archcompiler.load_spec(n).outputs.items()}
               for n in ("fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")}
    assert outputs == {
        "fcn_resnet50": {"out": ("upsample", 1.0, False), "aux": ("aux_upsample", 0.5, False)},
        "deeplabv3_mobilenet_v3_large": {"out": ("upsample", 1.0, False), "aux": ("aux_upsample", 0.5, False)},
        "lraspp_mobilenet_v3_large": {"out": ("upsample", 1.0, False)}}


def test_the_dilated_backbones_keep_their_maps():
    """ResNet's `output_stride` (torchvision's replace_stride_with_dilation) and MobileNetV3's `dilated`: the
    rows that would shrink the map below the output stride keep stride 1 and dilate their 3x3 (depthwise)
    convolutions, the first block of a row at the previous row's dilation; the parameters do not change."""
    def rows(name, overrides=None):
        report = archcompiler.analyze(archcompiler.load_spec(name, overrides=overrides))
        return {r["name"]: r["output"] for r in report["rows"]}, report["total"]["params"]

    plain, params = rows("resnet50")
    assert plain["conv5_x"] == [2048, 7, 7]
    for stride, maps in ((16, (14, 14)), (8, (28, 28))):
        dilated, same = rows("resnet50", {"output_stride": stride})
        assert (dilated["conv4_x"][1], dilated["conv5_x"][1]) == maps and same == params
    dilation = {layer.name: pair(layer.spec.dilation) for layer in archcompiler.load_spec("fcn_resnet50").layers
                if layer.spec.op == "conv"}
    assert [dilation[f"conv4_x/{i}/conv2"][0] for i in range(6)] == [1, 2, 2, 2, 2, 2]
    assert [dilation[f"conv5_x/{i}/conv2"][0] for i in range(3)] == [2, 4, 4]
    mobile, params = rows("mobilenet_v3_large", {"dilated": True})
    assert mobile["conv2"] == [960, 14, 14] and params == rows("mobilenet_v3_large")[1]


def test_the_command_line_in_a_fresh_process(tmp_path):
    ref = REFERENCE["deeplabv3_resnet50"]
    done = run_archc("flops", "deeplabv3_resnet50")
    assert done.returncode == 0, done.stderr
    assert f"total (inference):        {ref['params']:,} params, {ref['flops'] // 2:,} multiply-adds" in done.stdout
    assert "deeplab_head" in done.stdout and "224x224x21" in done.stdout
    done = run_archc("build", "lraspp_mobilenet_v3_large", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    params = REFERENCE["lraspp_mobilenet_v3_large"]["params"]
    assert f"parameters: {params:,} (torch); equals archc flops' total {params:,}" in done.stdout


def test_another_input_size_gives_scores_at_that_size():
    """Built for another input (torchvision's weights were trained at 520 pixels), the scores are upsampled to
    it, as the analysis says; the pooled branches follow their maps."""
    torch = pytest.importorskip("torch")
    sets = {"input": [3, 200, 264]}
    report = archcompiler.analyze(archcompiler.load_spec("lraspp_mobilenet_v3_large", overrides=sets))
    assert [r["output"] for r in report["rows"] if r["name"] in ("gate_up", "upsample")] == [[128, 25, 33], [21, 200, 264]]
    model = archcompiler.build("deeplabv3_mobilenet_v3_large", overrides=sets, seed=0).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 200, 264))
    assert tuple(y["out"].shape) == tuple(y["aux"].shape) == (1, 21, 200, 264)
