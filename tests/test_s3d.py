"""Video, step two (issue #34): torchvision's S3D (specs/s3d.yaml, from Xie et al. 2018) checked against its
recorded facts (tests/data/torchvision_video.json): state_dict keys in order with their shapes, the parameter
count and FLOPs (the torch-free analysis), the logits under the recipe weights. The ops it added against torch:
`max_pool3d` and `avg_pool3d` (archcompiler/ops/pool3d.py: nn.MaxPool3d, nn.AvgPool3d with padding, ceil_mode,
count_include_pad), and over clips `concat` (torch.cat along channels), `dropout`, a 1x1x1 `conv3d` with a bias
and the `reduce` mean over time and space: shape, parameters, FLOPs (FlopCounterMode), values and memory
(measured)."""

from __future__ import annotations

import json

import pytest
from conftest import DATA, assert_memory_measured, meta_layout, randomized, recipe_weights, run_archc

import archcompiler
from archcompiler import GraphError, SpecError

REF = json.loads((DATA / "torchvision_video.json").read_text())["builders"]["s3d"]

# a small clip network with each new op and form: a 3x3x3 max pool at stride 1 (padded) in a branch, the
# concatenation of two branches of clips, a strided max pool with ceil_mode (its last window cut), an average
# pool with ceil_mode and count_include_pad false, the 2x3x3 average at stride 1, dropout, the 1x1x1 classifier
# with a bias and the mean over time, height and width
POOLS = ("name: pools\ninput: [3, 5, 9, 9]\n"
         "layers:\n"
         "  - {name: stem, op: conv3d, out: 8, kernel: [1, 3, 3], padding: [0, 1, 1], norm: batch_norm, act: relu}\n"
         "  - {name: p, op: max_pool3d, kernel: 3, stride: 1, padding: 1}\n"
         "  - {name: proj, op: conv3d, out: 4, kernel: 1, norm: batch_norm, act: relu}\n"
         "  - {name: b, op: conv3d, out: 6, kernel: 1, input: stem}\n"
         "  - {name: cat, op: concat, inputs: [b, proj]}\n"
         "  - {name: down, op: max_pool3d, kernel: [2, 3, 3], stride: 2, padding: 1, ceil_mode: true}\n"
         "  - {name: avg, op: avg_pool3d, kernel: [2, 3, 3], stride: [1, 2, 2], padding: [0, 1, 1],"
         " ceil_mode: true, count_include_pad: false}\n"
         "  - {name: last, op: avg_pool3d, kernel: [2, 3, 3], stride: 1}\n"
         "  - {name: drop, op: dropout, p: 0.2}\n"
         "  - {name: head, op: conv3d, out: 3, kernel: 1}\n"
         "  - {name: mean, op: reduce, how: mean, dims: [2, 3, 4]}\n")


def test_s3d_is_a_name_of_the_zoo():
    from archcompiler.spec import zoo

    assert zoo.find("s3d").file.name == "s3d.yaml" and zoo.find("s3d").sets == {}


def test_keys_params_and_flops_equal_torchvision():
    """The analysis (no torch) gives torchvision's parameters and FLOPs (FlopCounterMode counts the 3-D
    convolutions, the classifier among them); the module, built on the meta device, torchvision's state_dict keys
    in order with their shapes."""
    report = archcompiler.analyze("s3d")
    assert report["input"] == REF["input"] == [3, 16, 224, 224]
    assert (report["total"]["params"], report["total"]["flops"]) == (REF["params"], REF["flops"])
    assert report["total"]["params"] == REF["tv_meta"]["num_params"]
    keys, params = meta_layout("s3d")
    assert keys == REF["keys"]
    assert params == REF["params"]


@pytest.mark.slow
def test_logits_equal_torchvision():
    """One forward in evaluation mode under the recipe weights (~9 s): the logits' shape, the 64 recorded values
    within 1e-4 of the largest of them, their sum and sum of absolute values within 1e-5 of the latter."""
    torch = pytest.importorskip("torch")
    model = archcompiler.build("s3d", weights=recipe_weights(REF["keys"])).eval()
    x = torch.randn(1, *REF["input"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).double()
    digest = REF["outputs"]["logits"]
    assert list(y.shape) == digest["shape"] == [1, 400]
    expected = torch.tensor(digest["values"], dtype=torch.float64)
    assert (y.flatten()[digest["at"]] - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    assert abs(y.sum().item() - digest["sum"]) <= 1e-5 * digest["abs_sum"]
    assert abs(y.abs().sum().item() - digest["abs_sum"]) <= 1e-5 * digest["abs_sum"]


def test_the_rows_of_the_network():
    """The stem (a separable 7x7x7 at stride 2, 1x7x7 then 7x1x1), the pools between the stages, the inception
    rows' widths (Inception v1's) and the classifier at the end: 2x7x7 averaged, 1x1x1 to the classes, the mean."""
    report = archcompiler.analyze("s3d")
    rows = {r["name"]: r["output"] for r in report["rows"]}
    assert rows["conv_1a"] == [64, 8, 112, 112] and rows["pool_2a"] == [64, 8, 56, 56]
    assert rows["conv_2c"] == [192, 8, 56, 56] and rows["pool_3a"] == [192, 8, 28, 28]
    assert [rows[f"mixed_{m}"][0] for m in ("3b", "3c", "4b", "4c", "4d", "4e", "4f", "5b", "5c")] == \
        [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    assert rows["pool_4a"] == [480, 4, 14, 14] and rows["pool_5a"] == [832, 2, 7, 7]
    assert rows["mixed_5c"] == [1024, 2, 7, 7] and rows["avgpool"] == [1024, 1, 1, 1]
    assert rows["logits"] == [400, 1, 1, 1] and rows["mean"] == [400]
    spec = archcompiler.load_spec("s3d")
    kernels = {layer.name: layer.spec.kernel for layer in spec.layers if layer.spec.op == "conv3d"}
    assert (kernels["conv_1a/spatial"], kernels["conv_1a/temporal"]) == ([1, 7, 7], [7, 1, 1])
    assert (kernels["mixed_4b/branch2_spatial"], kernels["mixed_4b/branch2_temporal"]) == ([1, 3, 3], [3, 1, 1])
    assert report["total"]["params"] == sum(r["params"] for r in report["rows"])


def test_the_command_line_in_a_fresh_process_never_imports_torch():
    import subprocess
    import sys

    done = run_archc("flops", "s3d")
    assert done.returncode == 0, done.stderr
    assert f"{REF['params']:,} params, {REF['flops'] // 2:,} multiply-adds" in done.stdout
    assert "input 16x224x224x3" in done.stdout and "1x3x3/1x2x2" in done.stdout and "2x7x7/1x1x1" in done.stdout
    code = ("import sys\nfrom archcompiler.cli import main\n"
            "rc = main(['validate', 's3d'])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(rc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------- the ops against torch


def test_ops_shape_params_and_flops_agree_with_torch():
    """Each pool's output size is nn.MaxPool3d's / nn.AvgPool3d's (ceil_mode's last window dropped where it would
    start in the right padding); the pools have no parameters and FlopCounterMode counts none of their work,
    nor the concatenation's or the mean's: the FLOPs are the convolutions'."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    report = archcompiler.analyze(POOLS, batch=2)
    rows = {r["name"]: r for r in report["rows"]}
    x = torch.randn(2, 8, 5, 9, 9)
    cat = torch.randn(2, 10, 5, 9, 9)
    torch_shapes = {
        "p": nn.MaxPool3d(3, 1, 1)(x), "down": nn.MaxPool3d((2, 3, 3), 2, 1, ceil_mode=True)(cat),
    }
    torch_shapes["avg"] = nn.AvgPool3d((2, 3, 3), (1, 2, 2), (0, 1, 1), ceil_mode=True,
                                       count_include_pad=False)(torch_shapes["down"])
    torch_shapes["last"] = nn.AvgPool3d((2, 3, 3), 1)(torch_shapes["avg"])
    for name, t in torch_shapes.items():
        assert rows[name]["output"] == list(t.shape[1:]), name
        assert rows[name]["params"] == 0 and rows[name]["macs"] == 0
    assert rows["down"]["output"] == [10, 3, 5, 5] and rows["cat"]["output"] == [10, 5, 9, 9]
    assert [rows[n]["output"] for n in ("drop", "head", "mean")] == [[10, 1, 1, 1], [3, 1, 1, 1], [3]]
    assert rows["head"]["params"] == 3 * 10 + 3
    model = archcompiler.build(POOLS, seed=0).eval()
    assert model.head.bias is not None
    assert sum(p.numel() for p in model.parameters()) == report["total"]["params"]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(torch.randn(2, 3, 5, 9, 9))
    assert tuple(y.shape) == (2, 3)
    assert counter.get_total_flops() == report["total"]["flops"] == 2 * report["total"]["macs"]
    # one operation per element of each window
    assert report["by_op"]["max_pool3d"]["elementwise"] == 2 * (8 * 5 * 9 * 9 * 27 + 10 * 3 * 5 * 5 * 18)


def test_ops_values_equal_a_hand_written_reference():
    torch = pytest.importorskip("torch")
    from torch.nn import functional as F

    m = randomized(archcompiler.build(POOLS, seed=0)).eval()
    x = torch.randn(2, 3, 5, 9, 9, generator=torch.Generator().manual_seed(0))

    def cbr(t, mod, **kw):
        return F.relu(F.batch_norm(F.conv3d(t, mod.conv.weight, **kw), mod.bn.running_mean, mod.bn.running_var,
                                   mod.bn.weight, mod.bn.bias, False, 0.1, mod.bn.eps))

    s = cbr(x, m.stem, padding=(0, 1, 1))
    proj = cbr(F.max_pool3d(s, 3, 1, 1), m.proj)
    cat = torch.cat([F.conv3d(s, m.b.weight, m.b.bias), proj], 1)
    d = F.max_pool3d(cat, (2, 3, 3), 2, 1, ceil_mode=True)
    a = F.avg_pool3d(d, (2, 3, 3), (1, 2, 2), (0, 1, 1), ceil_mode=True, count_include_pad=False)
    h = F.conv3d(F.avg_pool3d(a, (2, 3, 3), 1), m.head.weight, m.head.bias)
    expected = torch.mean(h, dim=(2, 3, 4))
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.jit.script(m)(x), expected, rtol=1e-5, atol=1e-5)


def test_ops_memory_matches_a_measurement():
    """Inference peak exactly (a max pool's int64 indices made and dropped), a training step within 1% (a max
    pool keeps its input and indices for backward, an average pool its input)."""
    pytest.importorskip("torch")
    assert_memory_measured(POOLS)


@pytest.mark.slow
def test_builder_memory_matches_a_measurement():
    """At the builder's clip (its last pool needs 2 x 7 x 7, so no smaller one), the inference peak exactly and
    a training step of one clip within 1%."""
    pytest.importorskip("torch")
    assert_memory_measured("s3d", infer_batch=1, train_batch=1)


def test_what_the_pools_refuse():
    with pytest.raises(SpecError):                     # padding over half the kernel: PyTorch refuses it
        archcompiler.load_spec(POOLS.replace("kernel: 3, stride: 1, padding: 1", "kernel: 3, stride: 1, padding: 2"))
    with pytest.raises(GraphError) as info:            # an image given to a clip pool
        archcompiler.analyze("name: x\ninput: [3, 8, 8]\nlayers:\n  - {name: p, op: max_pool3d, kernel: 2}\n")
    assert "max_pool3d needs a clip" in info.value.errors[0].message
    with pytest.raises(GraphError) as info:            # clips of other frames are not concatenated
        archcompiler.analyze(POOLS.replace("{name: b, op: conv3d, out: 6, kernel: 1, input: stem}",
                                           "{name: b, op: conv3d, out: 6, kernel: 1, stride: [2, 1, 1], "
                                           "input: stem}"))
    assert "concat needs clips of the same frames" in info.value.errors[0].message
