"""Video, step one (issue #34): clips, C x T x H x W, through archc, and torchvision's three ResNet-based video
builders (specs/video_resnet.yaml: r3d_18, mc3_18, r2plus1d_18) checked by name against torchvision's recorded
facts (tests/data/torchvision_video.json): state_dict keys in order with their shapes, the parameter count and
FLOPs (the torch-free analysis), the logits under the recipe weights. The clip's ops against torch: `conv3d`
(archcompiler/ops/conv3d.py: nn.Conv3d with its `norm` and `act`), `batch_norm` over a clip (nn.BatchNorm3d) and
`global_avg_pool3d` (nn.AdaptiveAvgPool3d(1)): shape, parameters, FLOPs (FlopCounterMode), values and memory
(measured). What reads images only refuses a clip, saying so, at the layer."""

from __future__ import annotations

import json

import pytest
from conftest import DATA, assert_memory_measured, meta_layout, randomized, recipe_weights, run_archc

import archcompiler
from archcompiler import GraphError, SpecError
from archcompiler.ops.conv3d import triple
from archcompiler.util import shape_text

REFERENCE = json.loads((DATA / "torchvision_video.json").read_text())["builders"]
BUILDERS = [n for n in REFERENCE if n != "s3d"]     # specs/video_resnet.yaml (s3d: tests/test_s3d.py)
SLOW = {"mc3_18", "r2plus1d_18"}           # ~80 GFLOPs a forward each; r3d_18's runs in the quick tier


def _tiered(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


# a small clip network with each op and form: a strided stem, a residual block (3x3x3 and a 1x3x3 that keeps the
# frames), a grouped and dilated conv3d with a bias and no norm, the pool, flatten and a classifier
CLIP = ("name: clip\ninput: [3, 4, 10, 10]\n"
        "blocks:\n  res:\n    layers:\n"
        "      - {name: a, op: conv3d, out: 8, kernel: 3, padding: 1, norm: batch_norm, act: relu}\n"
        "      - {name: b, op: conv3d, out: 8, kernel: [1, 3, 3], padding: [0, 1, 1], norm: batch_norm}\n"
        "      - {name: add, op: add, inputs: [b, in], act: relu}\n"
        "layers:\n"
        "  - {name: stem, op: conv3d, out: 8, kernel: [3, 5, 5], stride: [1, 2, 2], padding: [1, 2, 2],"
        " norm: batch_norm, act: relu}\n"
        "  - {name: r, use: res}\n"
        "  - {name: g, op: conv3d, out: 16, kernel: [2, 3, 3], stride: [2, 1, 1], padding: [0, 2, 2],"
        " dilation: [1, 2, 2], groups: 2}\n"
        "  - {name: pool, op: global_avg_pool3d}\n"
        "  - {name: flat, op: flatten}\n"
        "  - {name: fc, op: linear, out: 2}\n")


def test_the_three_builders_are_names_of_the_zoo():
    from archcompiler.spec import zoo

    assert {n: zoo.find(n).file.name for n in BUILDERS} == dict.fromkeys(BUILDERS, "video_resnet.yaml")
    assert {n: zoo.find(n).sets for n in BUILDERS} == {
        "r3d_18": {"model": "r3d"}, "mc3_18": {"model": "mc3"}, "r2plus1d_18": {"model": "r2plus1d"}}


@pytest.mark.parametrize("builder", BUILDERS)
def test_keys_params_and_flops_equal_torchvision(builder):
    """The analysis (no torch) gives torchvision's parameters and FLOPs (FlopCounterMode counts the 3-D
    convolutions and the classifier); the module, built on the meta device, torchvision's state_dict keys in
    order with their shapes."""
    ref = REFERENCE[builder]
    report = archcompiler.analyze(builder)
    assert report["input"] == ref["input"] == [3, 16, 112, 112]
    assert (report["total"]["params"], report["total"]["flops"]) == (ref["params"], ref["flops"])
    assert report["total"]["params"] == ref["tv_meta"]["num_params"]
    keys, params = meta_layout(builder)
    assert keys == ref["keys"]
    assert params == ref["params"]


@pytest.mark.parametrize("builder", _tiered(BUILDERS))
def test_logits_equal_torchvision(builder):
    """One forward in evaluation mode under the recipe weights: the logits' shape, the 64 recorded values within
    1e-4 of the largest of them, their sum and sum of absolute values within 1e-5 of the latter."""
    torch = pytest.importorskip("torch")
    ref = REFERENCE[builder]
    model = archcompiler.build(builder, weights=recipe_weights(ref["keys"])).eval()
    x = torch.randn(1, *ref["input"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).double()
    digest = ref["outputs"]["logits"]
    assert list(y.shape) == digest["shape"] == [1, 400]
    expected = torch.tensor(digest["values"], dtype=torch.float64)
    assert (y.flatten()[digest["at"]] - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    assert abs(y.sum().item() - digest["sum"]) <= 1e-5 * digest["abs_sum"]
    assert abs(y.abs().sum().item() - digest["abs_sum"]) <= 1e-5 * digest["abs_sum"]


def test_the_three_columns_of_the_table():
    """R3D: 3x3x3 everywhere, the time halved with the map from conv3_x on; MC3: 3-D in conv2_x, 1x3x3 after
    (the 16 frames kept to the pool); R(2+1)D: each 3x3x3 a 1x3x3 to torchvision's midplanes, written in the spec
    as (in * out * 27) // (in * 9 + 3 * out) of the block's input and output channels, and a 3x1x1, and its stem
    1x7x7 to 45 channels, then 3x1x1."""
    def rows(name):
        report = archcompiler.analyze(name)
        return {r["name"]: r["output"] for r in report["rows"]}

    r3d, mc3 = rows("r3d_18"), rows("mc3_18")
    assert [r3d[f"conv{i}_x"] for i in range(2, 6)] == [[64, 16, 56, 56], [128, 8, 28, 28], [256, 4, 14, 14],
                                                       [512, 2, 7, 7]]
    assert [mc3[f"conv{i}_x"] for i in range(2, 6)] == [[64, 16, 56, 56], [128, 16, 28, 28], [256, 16, 14, 14],
                                                       [512, 16, 7, 7]]
    assert r3d["avgpool"] == mc3["avgpool"] == [512, 1, 1, 1] and r3d["fc"] == [400]
    spec = archcompiler.load_spec("r2plus1d_18")
    mid = {layer.name: layer.spec.out for layer in spec.layers if layer.name.endswith("_mid")}
    for (cin, cout), row, first in (((64, 64), "conv2_x", 0), ((64, 128), "conv3_x", 0), ((128, 128), "conv3_x", 1),
                                    ((128, 256), "conv4_x", 0), ((256, 512), "conv5_x", 0), ((512, 512), "conv5_x", 1)):
        m = (cin * cout * 27) // (cin * 9 + 3 * cout)
        assert mid[f"{row}/{first}/conv1_mid"] == mid[f"{row}/{first}/conv2_mid"] == m
    assert mid["stem_mid"] == 45
    kernels = {layer.name: triple(layer.spec.kernel) for layer in spec.layers if layer.spec.op == "conv3d"}
    assert (kernels["conv3_x/0/conv1_mid"], kernels["conv3_x/0/conv1_out"]) == ((1, 3, 3), (3, 1, 1))
    mc3_spec = archcompiler.load_spec("mc3_18")
    kernels = {layer.name: triple(layer.spec.kernel) for layer in mc3_spec.layers if layer.spec.op == "conv3d"}
    assert (kernels["conv2_x/1/conv2"], kernels["conv3_x/0/conv1"]) == ((3, 3, 3), (1, 3, 3))


def test_the_command_line_in_a_fresh_process_never_imports_torch():
    import subprocess
    import sys

    ref = REFERENCE["r3d_18"]
    done = run_archc("flops", "r3d_18")
    assert done.returncode == 0, done.stderr
    assert f"total (inference):        {ref['params']:,} params, {ref['flops'] // 2:,} multiply-adds" in done.stdout
    assert "input 16x112x112x3" in done.stdout and "2x7x7x512" in done.stdout and "1x1x1x512" in done.stdout
    assert "3x7x7/1x2x2" in done.stdout            # the stem's patch: t x h x w / stride
    # the receptive field is a frame's (height and width): the 2-D arithmetic over the spatial kernels
    assert "receptive field of fc: 315x315 pixels" in done.stdout
    assert "by stage (output resolution: MACs): 16x56x56 " in done.stdout
    code = ("import sys\nfrom archcompiler.cli import main\n"
            "rc = main(['flops', 'mc3_18'])\nrc += main(['validate', 'r2plus1d_18'])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(rc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "38 conv/linear" in result.stdout      # 2 in the stem, 4 per block, 3 shortcuts, fc


def test_shape_text_of_a_clip():
    assert shape_text((3, 16, 112, 112)) == "16x112x112x3"
    assert shape_text((256, 28, 28)) == "28x28x256" and shape_text((400,)) == "1x1x400"


def test_a_clip_given_to_an_image_op_is_a_located_error():
    """conv, the 2-D pools, ... take images: a clip reaching one is refused at that layer, naming the clip."""
    text = CLIP.replace("  - {name: pool, op: global_avg_pool3d}\n", "  - {name: pool, op: global_avg_pool}\n")
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(text)
    (problem,) = info.value.errors
    assert "needs an image" in problem.message and "clip 2x5x5x16" in problem.message
    assert problem.line == 13
    with pytest.raises(GraphError) as info:           # and an image given to a clip op
        archcompiler.analyze(CLIP.replace("input: [3, 4, 10, 10]", "input: [3, 10, 10]"))
    assert "conv3d needs a clip" in info.value.errors[0].message and info.value.errors[0].line == 10
    with pytest.raises(SpecError):                    # an input of 5 numbers is no tensor archc knows
        archcompiler.load_spec(CLIP.replace("input: [3, 4, 10, 10]", "input: [3, 2, 4, 10, 10]"))


def test_features_refuse_a_clip_saying_so_training_prepares_its_frames():
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(archcompiler.load_spec("r3d_18", overrides={"features": ["conv3_x"]}))
    assert "a clip" in info.value.errors[0].message and "not supported" in info.value.errors[0].message
    pytest.importorskip("torch")
    from archcompiler.training.data import Preprocess

    # clips train since step two (tests/test_clips.py): each frame is prepared as an image of 112 x 112
    assert Preprocess.from_spec(archcompiler.load_spec("r3d_18")).size == 112


# ----------------------------------------------------------------------------- the ops against torch


def test_ops_shape_params_and_flops_agree_with_torch():
    """conv3d: nn.Conv3d (out x in / groups x kt x kh x kw weights, a bias without norm), its `norm` an
    nn.BatchNorm3d (2 C parameters, 2 C + 1 buffers); the pool nn.AdaptiveAvgPool3d(1)'s shape; FLOPs as
    FlopCounterMode counts them (the convolutions and the classifier)."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    report = archcompiler.analyze(CLIP, batch=2)
    rows = {r["name"]: r for r in report["rows"]}
    assert [rows[n]["output"] for n in ("stem", "r", "g", "pool", "flat", "fc")] == \
        [[8, 4, 5, 5], [8, 4, 5, 5], [16, 2, 5, 5], [16, 1, 1, 1], [16], [2]]
    model = archcompiler.build(CLIP, seed=0).eval()
    assert isinstance(model.stem.conv, nn.Conv3d) and isinstance(model.stem.bn, nn.BatchNorm3d)
    g = model.g
    assert (g.kernel_size, g.stride, g.padding, g.dilation, g.groups) == ((2, 3, 3), (2, 1, 1), (0, 2, 2), (1, 2, 2), 2)
    assert g.bias is not None and model.stem.conv.bias is None
    assert rows["g"]["params"] == 16 * 4 * 2 * 3 * 3 + 16
    assert rows["stem"]["params"] == 8 * 3 * 3 * 5 * 5 + 2 * 8 and rows["stem"]["buffers"] == 2 * 8 + 1
    assert sum(p.numel() for p in model.parameters()) == report["total"]["params"]
    x = torch.randn(2, 3, 4, 10, 10)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x)
    assert tuple(y.shape) == (2, 2)
    assert counter.get_total_flops() == report["total"]["flops"] == 2 * report["total"]["macs"]
    assert rows["pool"]["macs"] == 0 and report["by_op"]["global_avg_pool3d"]["elementwise"] == 2 * 16 * 2 * 5 * 5


def test_ops_values_equal_a_hand_written_reference():
    torch = pytest.importorskip("torch")
    from torch.nn import functional as F

    m = randomized(archcompiler.build(CLIP, seed=0)).eval()
    x = torch.randn(2, 3, 4, 10, 10, generator=torch.Generator().manual_seed(0))

    def bn(t, mod):
        return F.batch_norm(t, mod.running_mean, mod.running_var, mod.weight, mod.bias, False, 0.1, mod.eps)

    s = F.relu(bn(F.conv3d(x, m.stem.conv.weight, stride=(1, 2, 2), padding=(1, 2, 2)), m.stem.bn))
    a = F.relu(bn(F.conv3d(s, m.r.a.conv.weight, padding=1), m.r.a.bn))
    b = bn(F.conv3d(a, m.r.b.conv.weight, padding=(0, 1, 1)), m.r.b.bn)
    r = F.relu(b + s)
    g = F.conv3d(r, m.g.weight, m.g.bias, stride=(2, 1, 1), padding=(0, 2, 2), dilation=(1, 2, 2), groups=2)
    expected = F.linear(torch.flatten(F.adaptive_avg_pool3d(g, 1), 1), m.fc.weight, m.fc.bias)
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.jit.script(m)(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="takes clips of 4x10x10x3"):
        m(torch.randn(2, 3, 10, 10))


def test_ops_memory_matches_a_measurement():
    """Inference peak exactly, a training step within 1% (a 3-D convolution keeps its input for backward, as the
    2-D one does; the residual sum of clips is computed out of place)."""
    pytest.importorskip("torch")
    assert_memory_measured(CLIP)


@pytest.mark.slow
@pytest.mark.parametrize("builder", BUILDERS)
def test_builders_memory_matches_a_measurement(builder):
    """At the builder's clip, the inference peak exactly; a training step (4 clips of 4 x 32 x 32) within 1%."""
    pytest.importorskip("torch")
    if builder == "r3d_18":
        assert_memory_measured(builder, infer_batch=1, train_batch=None)
    assert_memory_measured(archcompiler.load_spec(builder, overrides={"input": [3, 4, 32, 32]}), infer_batch=2,
                           train_batch=4)
