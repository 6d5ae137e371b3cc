"""archc import (issue #24): a PyTorch module becomes a readable spec that builds the same network.

The modules imported here are archc's own zoo modules (they have torchvision's state_dict keys;
torchvision is no dependency): build a zoo builder, import the built module, build the imported
spec, load the original state_dict strictly, and compare logits, parameters and FLOPs. The check
against torchvision's own modules runs in the side environment (benchmarks/RESULTS.md)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT, run_archc

import archcompiler
from archcompiler import BackendError

torch = pytest.importorskip("torch")
nn = torch.nn

QUICK = ["resnet18", "mobilenet_v2", "googlenet"]
# the slow tier: one zoo module per pattern the importer reads (blocks with when:, stochastic depth and SE,
# channel shuffle and split, ConvNeXt's channels-last stretch, auxiliary heads); benchmarks/import_torchvision.py
# runs all of torchvision's 68 builders
SLOW = ["resnet50", "efficientnet_b0", "shufflenet_v2_x0_5", "convnext_tiny", "inception_v3", "vit_b_16"]


def _round_trip(name: str, path: str | None = None, overrides: list[str] | None = None) -> str:
    spec = archcompiler.load_spec(path or name, overrides)
    original = archcompiler.build(spec, seed=0).eval()
    text = archcompiler.import_module(original, name=name)
    imported = archcompiler.load_spec(text)
    a, b = archcompiler.analyze(spec)["total"], archcompiler.analyze(imported)["total"]
    assert (a["params"], a["macs"], a["flops"]) == (b["params"], b["macs"], b["flops"])
    rebuilt = archcompiler.build(imported).eval()
    rebuilt.load_state_dict(original.state_dict(), strict=True)
    # the same keys in the same order, but where a module is registered before one its forward calls first
    # (GoogLeNet's auxiliary heads, Swin V2's norm1 after its attention): the spec lists layers as they run
    assert list(rebuilt.state_dict()) == list(original.state_dict()) or name in ("googlenet", "swin_v2_t")
    x = torch.randn(1, *spec.input, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x), rtol=0, atol=0)
    return text


@pytest.mark.parametrize("name", QUICK + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW])
def test_an_imported_zoo_module_builds_the_same_network(name):
    text = _round_trip(name)
    assert text.startswith("# yaml-language-server: $schema=")
    assert "Imported by archc from" in text.splitlines()[2]


def test_an_imported_vit_is_its_token_ops_and_one_encoder_block():
    """ViT's token ops (patch_embed, class_token, pos_embedding, self_attention, select_token, layer_norm
    and linear over tokens) map back: the same state_dict keys, parameters, MACs and logits. Its layers
    encoder.layers.encoder_layer_0 .. _3 are one table row repeated 4 times, a torch.rename rule giving
    the instances their names back."""
    text = _round_trip("vit_tiny", str(ROOT / "specs" / "vit-tiny.yaml"))
    for op in ("patch_embed", "class_token", "pos_embedding", "self_attention", "select_token"):
        assert f"op: {op}" in text
    assert "over: tokens" in text
    blocks, rows = _blocks_and_rows(text)
    assert len(blocks) == 1 and rows == 1 and "- [encoder.layers.encoder_layer, 4]" in text
    assert r'["^encoder\\.layers\\.encoder_layer/\\d+/", "encoder.layers.encoder_layer_{index}/"]' in text


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides", [
    ("swin_t", ["dim=16", "heads=1", "input=[3,112,112]"]),
    ("swin_v2_t", ["dim=16", "heads=1", "input=[3,112,112]"]),
    ("maxvit_t", ["stem=16", "C1=32", "C2=32", "C3=32", "C4=64", "B1=1", "B2=1", "B3=1", "B4=1"]),
])
def test_imported_swin_and_maxvit_modules_are_their_window_attention_and_patch_merging(name, overrides):
    """archc's own Swin, Swin V2 and MaxViT modules (their WindowAttention and PatchMerging leaves of the
    trace, over the channels-last map) import exactly; torchvision's own (ShiftedWindowAttention(V2),
    PatchMerging(V2), MaxViT's partitioned RelativePositionalMultiHeadAttention) in the side environment."""
    text = _round_trip(name, None, overrides)
    assert "op: window_attention" in text and ("op: patch_merging" in text) == name.startswith("swin")
    assert ("cosine: true" in text) == name.startswith("swin_v2") and ("grid: true" in text) == name.startswith("maxvit")


def _blocks_and_rows(text: str) -> tuple[list[str], int]:
    import yaml
    doc = yaml.safe_load(text)
    rows = sum(len(layer["table"]["rows"]) for layer in doc["layers"] if "table" in layer)
    return list(doc.get("blocks", {})), rows


def test_resnet50_is_one_bottleneck_block_and_four_rows_and_matches_the_hand_written_spec_row_by_row():
    original = archcompiler.build(archcompiler.load_spec("resnet50"), seed=0)
    text = archcompiler.import_module(original, name="resnet50")
    blocks, rows = _blocks_and_rows(text)
    assert len(blocks) == 1 and rows == 4
    assert re.search(r"- \[layer3, 256, 2, 6\]", text)
    hand = (ROOT / "specs" / "resnet.yaml").read_text()
    assert text.count("\n") <= 2 * hand.count("\n")
    # archc diff: the rows are named differently (layer1 / conv2_x), so the rows that compute something are
    # paired in order; none differs in output shape, parameters or MACs
    report = archcompiler.diff(archcompiler.load_spec(text), "resnet50")
    def cost(r, side):
        return r["output"][side], r["params"]["ab"[side]], r["macs"]["ab"[side]]
    removed = [cost(r, 0) for r in report["rows"] if r["status"] == "removed" and any(cost(r, 0)[1:])]
    added = [cost(r, 1) for r in report["rows"] if r["status"] == "added" and any(cost(r, 1)[1:])]
    assert removed == added and len(removed) == 4                       # layer1..4 against conv2_x..conv5_x
    assert all(cost(r, 0) == cost(r, 1) for r in report["rows"] if r["status"] in ("same", "changed"))
    assert report["total"]["params"]["delta"] == report["total"]["macs"]["delta"] == 0
    # layer by layer, whatever the names: every one of the 107 layers that compute (53 convolutions, their
    # BatchNorms, the classifier) is the same
    layers = archcompiler.diff(archcompiler.load_spec(text), "resnet50", layers=True)["rows"]
    assert len(layers) == 107 and all(r["status"] == "same" for r in layers)


def test_diff_by_layers_shows_no_difference_where_only_the_rows_group_layers_differently(tmp_path):
    """An imported DenseNet-121 groups its stem's layers into rows other than the paper's table does
    (conv0, norm0, relu0, pool0 against the hand-written stem): `archc diff` by rows shows that; by layers
    (`--layers`) every layer that computes is equal. A real difference still shows layer by layer."""
    from conftest import run_archc

    original = archcompiler.build(archcompiler.load_spec("densenet121"), seed=0)
    path = tmp_path / "densenet121-imported.yaml"
    path.write_text(archcompiler.import_module(original, name="densenet121"))
    by_rows = archcompiler.diff(str(path), "densenet121")["rows"]
    assert any(r["status"] != "same" for r in by_rows)
    by_layers = archcompiler.diff(str(path), "densenet121", layers=True)["rows"]
    assert len(by_layers) == 242 and all(r["status"] == "same" for r in by_layers)
    done = run_archc("diff", str(path), "densenet121", "--layers")
    assert done.returncode == 0 and "no differences in any layer" in done.stdout
    # ResNeXt's grouped 3x3 convolutions are twice as wide: those layers (and their BatchNorms) differ
    variant = archcompiler.diff("resnet50", "resnext50_32x4d", layers=True)["rows"]
    changed = {(r["name"], r["type"]) for r in variant if r["status"] == "changed"}
    assert {("conv2_x/0/conv2", "conv2d"), ("conv2_x/0/conv2", "batch_norm2d")} <= changed
    assert not any(name == "fc" for name, _ in changed)


def test_googlenet_is_the_inception_block_and_table_1s_rows():
    original = archcompiler.build(archcompiler.load_spec("googlenet"), seed=0)
    text = archcompiler.import_module(original, name="googlenet")
    import yaml
    doc = yaml.safe_load(text)
    uses = [r[0] for layer in doc["layers"] if layer.get("table", {}).get("use") == "inception"
            for r in layer["table"]["rows"]] + [layer["name"] for layer in doc["layers"] if layer.get("use") == "inception"]
    assert list(doc["blocks"])[0] == "inception" and sorted(uses) == [f"inception{k}" for k in
                                                                       ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")]
    # layer by layer against the hand-written spec, the auxiliary heads wherever each lists them
    layers = archcompiler.diff(archcompiler.load_spec(text), "googlenet", layers=True)["rows"]
    assert all(r["status"] == "same" for r in layers) and sum(r["training_only"] for r in layers) == 8


# ----------------------------------------------------------------------------- user modules


class Looped(nn.Module):
    """A user's module: layers in a ModuleList, run by a for loop."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layers = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
                                    for _ in range(3))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = x + layer(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Clamp(nn.Module):
    def forward(self, x):
        return x.clamp(0, 6)


class WithCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = Clamp()

    def forward(self, x):
        return self.act(self.conv(x))


class Gate(nn.Module):
    def forward(self, x):
        if x.mean() > 0:
            return x
        return -x


class Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gate = Gate()

    def forward(self, x):
        return self.gate(self.conv(x))


def test_a_module_with_a_for_loop_over_its_layers_imports():
    model = Looped().eval()
    text = archcompiler.import_module(model, input=(3, 16, 16))
    spec = archcompiler.load_spec(text)
    rebuilt = archcompiler.build(spec).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    assert "{name: layers.2.0, op: conv, out: 8, kernel: 3, padding: 1, norm: batch_norm, bias: true, act: relu}" in text


class Shuffle(nn.Module):
    """ShuffleNetV2's unit as torchvision writes it: chunk, a branch, cat, and the channel shuffle by
    view / transpose / contiguous / view on the sizes x.size() gives."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.branch2 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4), nn.ReLU(inplace=True))

    def forward(self, x):
        x = self.stem(x)
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, self.branch2(x2)), dim=1)
        b, c, h, w = out.size()
        out = out.view(b, 2, c // 2, h, w)
        out = torch.transpose(out, 1, 2).contiguous()
        return out.view(b, -1, h, w)


def _rebuilds(model, text: str, x, tol: float = 0.0) -> None:
    """The imported spec builds a module that loads ``model``'s state_dict strictly and computes the same."""
    rebuilt = archcompiler.build(archcompiler.load_spec(text)).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=tol, atol=tol)


def test_channel_split_and_shuffle_written_with_views_import_as_their_ops():
    model = Shuffle().eval()
    text = archcompiler.import_module(model, input=(3, 6, 6))
    assert "op: channel_split, half: first" in text and "op: channel_shuffle, groups: 2" in text
    _rebuilds(model, text, torch.randn(2, 3, 6, 6))


class DenseLayer(nn.Module):
    """torchvision's _DenseLayer, reduced: it concatenates the list of all earlier outputs itself."""

    def __init__(self, cin: int, k: int) -> None:
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
        self.conv1 = nn.Conv2d(cin, 2 * k, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(2 * k), nn.ReLU()
        self.conv2 = nn.Conv2d(2 * k, k, 3, padding=1, bias=False)

    def forward(self, inputs):
        x = torch.cat(inputs, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, cin: int, k: int) -> None:
        super().__init__({f"denselayer{i + 1}": DenseLayer(cin + i * k, k) for i in range(layers)})

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class TinyDense(nn.Module):
    """DenseNet as torchvision writes it, and a check on the input's shape as ViT's _process_input does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.block1 = DenseBlock(4, 8, 4)
        self.transition = nn.Sequential(nn.BatchNorm2d(24), nn.ReLU(), nn.Conv2d(24, 8, 1), nn.AvgPool2d(2))
        self.block2 = DenseBlock(4, 8, 4)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        n, c, h, w = x.shape
        torch._assert(h == 16, f"wrong height {h}")
        torch._assert(w // 2 == 8, f"wrong width {w}")
        x = self.block2(self.transition(self.block1(self.conv0(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1).reshape(n, -1))


def test_densenets_list_of_all_earlier_features_imports_as_one_block_concatenated_to_its_input():
    """Each dense layer concatenates all earlier outputs: read as the concatenation before it and the newest
    output, each layer is the same block, its rows repeated (a torch.rename rule numbering them from 1).
    The size arithmetic and torch._assert on it are evaluated once the shapes are known, and dropped."""
    model = TinyDense().eval()
    text = archcompiler.import_module(model, input=(3, 16, 16))
    blocks, rows = _blocks_and_rows(text)
    assert blocks == ["dense_layer"] and rows == 2 and "- [block1.denselayer, 4]" in text
    assert "{name: concat, op: concat, inputs: [in, conv2]}" in text and "block1.denselayer{index + 1}/" in text
    _rebuilds(model, text, torch.randn(2, 3, 16, 16))


class Partitioned(nn.Module):
    """MaxViT's partition of the map into P x P windows (then a grid), per-position layers on it, and back."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.norm, self.fc = nn.LayerNorm(8), nn.Linear(8, 8)

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.shape
        p = 2
        y = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p, c)
        y = torch.swapaxes(y, -2, -3)
        y = y + self.fc(self.norm(y))
        y = torch.swapaxes(y, -2, -3)
        return y.reshape(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


def test_layers_on_a_map_cut_into_windows_read_the_map():
    model = Partitioned().eval()
    text = archcompiler.import_module(model, input=(3, 4, 6))
    assert "{name: norm, op: layer_norm}" in text and "{name: fc, op: linear, out: 8, over: channels}" in text
    _rebuilds(model, text, torch.randn(2, 3, 4, 6), 1e-6)


def test_a_custom_module_archc_cannot_map_is_named_with_its_class_and_the_closest_op():
    with pytest.raises(BackendError) as exc:
        archcompiler.import_module(WithCustom(), input=(3, 8, 8))
    message = exc.value.errors[0].format()
    assert "act (Clamp)" in message and ".clamp()" in message and "closest" in message


def test_a_forward_that_branches_on_the_input_is_named_with_its_module_and_class():
    with pytest.raises(BackendError) as exc:
        archcompiler.import_module(Branching(), input=(3, 8, 8))
    message = exc.value.errors[0].format()
    assert "gate (Gate)" in message and "branches on the input" in message and "closest" in message


def test_the_reverse_table_maps_to_ops_of_the_op_table():
    from archcompiler.ops import FROM_TORCH, KINDS

    assert {e.kind for e in FROM_TORCH.values()} <= set(KINDS)


# ----------------------------------------------------------------------------- the command


def test_the_command_writes_the_spec_atomically_and_leaves_nothing_on_failure(tmp_path, capsys):
    from archcompiler.cli import main

    out = tmp_path / "net.yaml"
    assert main(["import", "archcompiler:build", "--arg", "spec_or_path=resnet18", "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# yaml-language-server: $schema=") and "archcompiler:build --arg spec_or_path=resnet18" in text
    assert archcompiler.analyze(archcompiler.load_spec(out))["total"]["params"] == 11_689_512
    # the module's weights beside it, which the spec loads strictly (archc train SPEC --weights fine-tunes them)
    assert "(weights: --weights net.safetensors)" in text
    archcompiler.build(str(out), weights=str(tmp_path / "net.safetensors"))
    module = tmp_path / "custom.py"
    module.write_text("import torch\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n"
                      "        return torch.cumsum(x, 1)\n")
    bad = tmp_path / "bad.yaml"
    assert main(["import", f"{module}:Net", "-o", str(bad)]) == 1
    assert "has no archc op" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.py", "net.safetensors", "net.yaml"]


# ----------------------------------------------------------------------------- from ONNX (data: nothing in it runs)


def _onnx_graph(tmp_path, extra_nodes=(), op_type=None):
    """A small ONNX model written with onnx.helper: conv + BatchNorm + ReLU, a max pool branch, a
    concat, HardSwish, global pooling, a flatten and a Gemm; random initializers named as a state_dict."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name, *shape, positive=False):
        a = rng.random(shape, dtype=np.float32) + 0.5 if positive else rng.standard_normal(shape).astype(np.float32)
        return numpy_helper.from_array(a, name)
    inits = [init("stem.weight", 8, 3, 3, 3), init("stem.bias", 8), init("bn.weight", 8, positive=True),
             init("bn.bias", 8), init("bn.running_mean", 8), init("bn.running_var", 8, positive=True),
             init("fc.weight", 5, 16), init("fc.bias", 5)]
    nodes = [helper.make_node("Conv", ["image", "stem.weight", "stem.bias"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
                              ["b"], epsilon=1e-5),
             helper.make_node("Relu", ["b"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
             helper.make_node(op_type or "HardSwish", ["r"], ["h"]),
             helper.make_node("Concat", ["h", "p"], ["cat"], axis=1),
             helper.make_node("GlobalAveragePool", ["cat"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1), *extra_nodes]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])], inits)
    path = tmp_path / "small.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path, {t.name: numpy_helper.to_array(t) for t in inits}


def test_an_onnx_file_imports_as_a_spec_and_a_weights_file_that_computes_the_same(tmp_path):
    from archcompiler.cli import main

    path, w = _onnx_graph(tmp_path)
    out = tmp_path / "small.yaml"
    assert main(["import", str(path), "-o", str(out)]) == 0
    text = out.read_text()
    assert "{name: stem, op: conv, out: 8, kernel: 3, padding: 1, norm: batch_norm, bias: true, act: relu}" in text
    assert '- ["^stem/bn$", bn]' in text          # the BatchNorm's own module path, by a torch.rename rule
    spec = archcompiler.load_spec(out)
    model = archcompiler.build(spec, weights=str(tmp_path / "small.safetensors")).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = {k: torch.tensor(v) for k, v in w.items()}
    F = torch.nn.functional
    r = F.relu(F.batch_norm(F.conv2d(x, t["stem.weight"], t["stem.bias"], padding=1), t["bn.running_mean"],
                            t["bn.running_var"], t["bn.weight"], t["bn.bias"], eps=1e-5))
    cat = torch.cat([F.hardswish(r), F.max_pool2d(r, 3, 1, 1)], 1)
    want = F.linear(cat.mean((2, 3)), t["fc.weight"], t["fc.bias"])
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)
    assert archcompiler.analyze(spec)["total"]["params"] == sum(v.size for k, v in w.items() if "running" not in k)


def test_an_onnx_channel_shuffle_and_split_are_read_as_their_ops(tmp_path):
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from archcompiler.importers.onnx import read

    shape5 = numpy_helper.from_array(np.array([1, 2, 4, 4, 4], dtype=np.int64), "s5")
    shape4 = numpy_helper.from_array(np.array([1, 8, 4, 4], dtype=np.int64), "s4")
    nodes = [helper.make_node("Reshape", ["image", "s5"], ["g"]),
             helper.make_node("Transpose", ["g"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "s4"], ["shuffled"]),
             helper.make_node("Split", ["shuffled"], ["a", "b"], axis=1, num_outputs=2),
             helper.make_node("Relu", ["b"], ["rb"]),
             helper.make_node("Concat", ["a", "rb"], ["out"], axis=1)]
    graph = helper.make_graph(nodes, "shuffle", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 4, 4])], [shape5, shape4])
    path = tmp_path / "shuffle.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    flat, _ = read(path)
    assert [it.fields for it in flat.items] == [{"op": "channel_shuffle", "groups": 2}, {"op": "channel_split", "half": "first"},
                                                {"op": "channel_split", "half": "second"}, {"op": "relu"}, {"op": "concat"}]


def test_an_onnx_node_archc_cannot_map_is_refused_by_name_and_op_type_and_nothing_is_written(tmp_path, capsys):
    from archcompiler.cli import main

    path, _ = _onnx_graph(tmp_path, op_type="Softplus")
    assert main(["import", str(path), "-o", str(tmp_path / "x.yaml")]) == 1
    err = capsys.readouterr().err
    assert "(Softplus): has no archc op" in err and "closest op type" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.onnx"]


def test_an_onnx_channels_last_view_is_read_only_by_ops_that_compute_the_same_on_it(tmp_path):
    """Transpose 0 2 3 1 makes a channels-last view: LayerNormalization over its last axis and element-wise
    ops read it (as archc's layer_norm and activations), Transpose 0 3 1 2 gives the image back; another op
    reading the view, or a view as the model's output, is refused by node, never guessed."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from archcompiler.importers.onnx import read

    def model(tail, out_shape):
        inits = [numpy_helper.from_array(np.ones(4, np.float32), "norm.weight"),
                 numpy_helper.from_array(np.zeros(4, np.float32), "norm.bias")]
        nodes = [helper.make_node("Transpose", ["image"], ["v"], perm=[0, 2, 3, 1]),
                 helper.make_node("LayerNormalization", ["v", "norm.weight", "norm.bias"], ["n"], axis=-1, epsilon=1e-6),
                 helper.make_node("Relu", ["n"], ["r"]), *tail]
        graph = helper.make_graph(nodes, "view", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 4, 3, 3])],
                                  [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, out_shape)], inits)
        path = tmp_path / "view.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
        return path
    flat, _ = read(model([helper.make_node("Transpose", ["r"], ["out"], perm=[0, 3, 1, 2])], [1, 4, 3, 3]))
    assert [it.fields for it in flat.items] == [{"op": "layer_norm", "eps": 1e-6}, {"op": "relu"}]
    assert flat.items[-1].shape == (4, 3, 3)
    with pytest.raises(BackendError, match=r"node mp \(MaxPool\): reads a channels-last view"):
        read(model([helper.make_node("MaxPool", ["r"], ["out"], kernel_shape=[1, 1], name="mp")], [1, 3, 3, 4]))
    with pytest.raises(BackendError, match="is a channels-last view"):
        read(model([], [1, 3, 3, 4]))


def test_an_onnx_file_is_bounded_like_every_untrusted_input(tmp_path, monkeypatch):
    from archcompiler.importers import onnx as reader
    from archcompiler.importers.onnx import files

    path, _ = _onnx_graph(tmp_path)
    monkeypatch.setattr(reader, "MAX_NODES", 3)
    with pytest.raises(BackendError, match="at most 3 of each"):
        reader.read(path)
    monkeypatch.setattr(files, "MAX_ONNX_BYTES", 100)
    with pytest.raises(BackendError, match="at most 100 are read"):
        reader.read(path)
    monkeypatch.undo()
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model" * 10)
    with pytest.raises(BackendError, match="not a readable ONNX model"):
        reader.read(tmp_path / "junk.onnx")



def test_onnx_external_data_is_read_only_from_a_plain_file_beside_the_model(tmp_path):
    """A model over protobuf's 2 GB has its weights as external data: read from a file beside the model,
    at the initializer's offset and length; a location with a folder or ``..``, or a length that is not
    the initializer's size, is refused by name (read as data, nothing written)."""
    onnx = pytest.importorskip("onnx")
    from onnx import external_data_helper

    from archcompiler.importers.onnx import read

    path, w = _onnx_graph(tmp_path)
    model = onnx.load(str(path))
    external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True, location="small.data",
                                                        size_threshold=0)
    onnx.save(model, str(tmp_path / "ext.onnx"))
    flat, weights = read(tmp_path / "ext.onnx")
    assert (weights["stem.weight"] == w["stem.weight"]).all() and (weights["fc.weight"] == w["fc.weight"]).all()
    for location, why in [("../small.data", "not a plain file name"), ("sub/small.data", "not a plain file name"),
                          ("missing.data", "no such file")]:
        bad = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
        for t in bad.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
        onnx.save(bad, str(tmp_path / "bad.onnx"))
        with pytest.raises(BackendError, match=why):
            read(tmp_path / "bad.onnx")
    bad = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
    entry = next(e for e in bad.graph.initializer[0].external_data if e.key == "length")
    entry.value = "4"
    onnx.save(bad, str(tmp_path / "bad.onnx"))
    with pytest.raises(BackendError, match="do not hold its"):
        read(tmp_path / "bad.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5"])
def test_build_emit_onnx_then_import_round_trips(name, tmp_path):
    """archc build --emit onnx, then archc import: the spec and its weights compute the exported
    network (its BatchNorms are folded into the convolutions by the exporter, so the parameters are
    the ONNX file's)."""
    pytest.importorskip("onnxscript")
    from archcompiler.backends.torch.export import export
    from archcompiler.cli import main

    spec = archcompiler.load_spec(name)
    original = archcompiler.build(spec, seed=0).eval()
    export(original, spec, "onnx", tmp_path / "m.onnx")
    assert main(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml")]) == 0
    imported = archcompiler.load_spec(tmp_path / "m.yaml")
    rebuilt = archcompiler.build(imported, weights=str(tmp_path / "m.safetensors")).eval()
    from safetensors.torch import load_file
    state = load_file(tmp_path / "m.safetensors")
    assert archcompiler.analyze(imported)["total"]["params"] == sum(
        v.numel() for k, v in state.items() if k.endswith(("weight", "bias")))
    x = torch.randn(1, *spec.input, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x), rtol=1e-4, atol=1e-4)


def _onnx_round_trip(spec, tmp_path, weights=lambda m: m):
    """Export with the BatchNormalization nodes kept, import: (original, rebuilt, imported spec)."""
    from archcompiler.backends.torch.export import export
    from archcompiler.cli import main

    original = weights(archcompiler.build(spec, seed=0).eval())
    export(original, spec, "onnx", tmp_path / "m.onnx", keep_batch_norm=True)
    assert main(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml")]) == 0
    imported = archcompiler.load_spec(tmp_path / "m.yaml")
    return original, archcompiler.build(imported, weights=str(tmp_path / "m.safetensors")).eval(), imported


def test_emit_onnx_keeping_batch_norm_imports_with_identical_params_and_logits(tmp_path):
    """archc build --emit onnx --keep-batch-norm, then archc import: the BatchNorms come back as
    BatchNorms (not folded into the convolutions), so the parameter count is the original's."""
    pytest.importorskip("onnxscript")
    import onnx

    spec = archcompiler.load_spec(str(ROOT / "tests" / "data" / "digits-cnn.yaml"))
    original, rebuilt, imported = _onnx_round_trip(spec, tmp_path)
    assert sum(n.op_type == "BatchNormalization" for n in onnx.load(str(tmp_path / "m.onnx")).graph.node) == 3
    assert archcompiler.analyze(imported)["total"]["params"] == archcompiler.analyze(spec)["total"]["params"]
    assert sorted(p.numel() for p in rebuilt.parameters()) == sorted(p.numel() for p in original.parameters())
    x = torch.randn(2, *spec.input, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x), rtol=0, atol=1e-6)



def test_a_model_over_two_gigabytes_exports_its_weights_beside_the_file_and_imports(tmp_path, monkeypatch):
    """Over protobuf's 2 GB (here: the limit set to 0), --emit onnx writes the weights as external data in
    PATH.data beside PATH (not under the temporary file's name), and archc import reads them back."""
    pytest.importorskip("onnxscript")
    from archcompiler.backends.torch import export

    monkeypatch.setattr(export, "ONNX_ONE_FILE_BYTES", 0)
    spec = archcompiler.load_spec(str(ROOT / "tests" / "data" / "digits-cnn.yaml"))
    original, rebuilt, imported = _onnx_round_trip(spec, tmp_path)
    assert {"m.onnx", "m.onnx.data"} <= {p.name for p in tmp_path.iterdir()}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    x = torch.randn(2, *spec.input, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x), rtol=0, atol=1e-6)

# one small variant per family whose ONNX operators differ (benchmarks/onnx_round_trip.py runs every shipped
# spec), in this process, compared with the torch module it was exported from; the families of
# CONDITION_FAMILIES below (ResNet, MobileNet V2 and V3's Clip, HardSwish and squeeze-and-excitation,
# ShuffleNet's shuffle and split, SqueezeNet's Concat, ViT's tokens and attention, MaxViT's windows and grid)
# go through the command line there, compared with onnxruntime by the import itself. Here: DenseNet's Concat
# and AveragePool; GoogLeNet's ceil-mode pooling and four-way Concat; the paper's GoogLeNet's LRN, which the
# exporter writes as local_response_norm's own steps (Mul, Pad, 3-d AveragePool, Pow, Div); ConvNeXt's
# channels-last stretches, layer_scale and as_strided; Swin's shifted, padded and whole-map windows and patch
# merging; Swin V2's cosine attention and position MLP
ONNX_FAMILIES = [("densenet121", ["input=[3,64,64]", *(f"variants.rows.block{b}_n=[2,2,2,2]" for b in (2, 3, 4))]),
                 ("googlenet", ["input=[3,64,64]"]), ("googlenet-small", None),
                 ("convnext_tiny", [*(f"variants.rows.C{k}=[16,16,16,16]" for k in range(1, 5)),
                                    *(f"variants.rows.B{k}=[1,1,1,1]" for k in (1, 2, 4)), "variants.rows.B3=[2,2,2,2]",
                                    "input=[3,32,32]"]),
                 ("swin_t", ["dim=16", "heads=1", *(f"variants.rows.L{k}=[1,1,1]" for k in (2, 3, 4)), "input=[3,56,56]"]),
                 ("swin_v2_t", ["dim=16", "heads=1", *(f"variants.rows.L{k}=[1,1,1]" for k in (2, 3, 4)),
                                "input=[3,64,64]"])]


def _trained(model):
    """Seeded parameters and BatchNorm statistics as a trained network has them: a fresh one's zero biases
    and identical BatchNorm tensors are dropped or shared by ONNX's optimiser (benchmarks/onnx_round_trip.py,
    whose every-spec run uses the same weights)."""
    import importlib.util

    where = importlib.util.spec_from_file_location("onnx_round_trip", ROOT / "benchmarks" / "onnx_round_trip.py")
    module = importlib.util.module_from_spec(where)
    where.loader.exec_module(module)
    return module.randomized(model)


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides", ONNX_FAMILIES)
def test_shipped_specs_round_trip_through_onnx_with_identical_params_and_logits(name, overrides, tmp_path):
    pytest.importorskip("onnxscript")
    spec = archcompiler.load_spec(name, overrides)
    original, rebuilt, imported = _onnx_round_trip(spec, tmp_path, _trained)
    params = archcompiler.analyze(spec)["total"]["params"]        # without training-only heads (GoogLeNet's)
    assert archcompiler.analyze(imported)["total"]["params"] == params == sum(p.numel() for p in rebuilt.parameters())
    x = torch.randn(1, *spec.input, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x), rtol=1e-5, atol=1e-5)


# Every shipped family whose spec has a `when:` condition or an `in_channels` expression, reduced: the spec
# the import writes must itself resolve in a fresh process (its conditions read the block's input shape).
# (VGG's `when: batch_norm` reads a parameter only; reduced below 224x224 its adaptive pool upsamples, which the
# exporter writes as a gather archc does not read. benchmarks/onnx_round_trip.py runs it at its size.)
CONDITION_FAMILIES = [("resnet18", ["input=[3,32,32]"]), ("mobilenet_v2", ["input=[3,32,32]"]),
                      ("mobilenet_v3_small", ["input=[3,32,32]"]), ("efficientnet_b0", ["input=[3,32,32]"]),
                      # (two blocks a stage: the first strided and widening, the second with its residual)
                      ("efficientnet_v2_s", ["input=[3,32,32]", *(f"variants.rows.n{k}=[2,2,2]" for k in range(1, 7))]),
                      ("mnasnet0_5", ["input=[3,32,32]"]),
                      ("regnet_y_400mf", ["input=[3,32,32]"]), ("shufflenet_v2_x0_5", ["input=[3,32,32]"]),
                      ("squeezenet1_1", ["input=[3,64,64]"]),
                      ("vit_b_16", ["dim=32", "depth=1", "heads=2", "mlp=64", "input=[3,32,32]"]),
                      ("maxvit_t", ["stem=16", "C1=16", "C2=16", "C3=32", "C4=32", "B1=1", "B2=1", "B3=1", "B4=1",
                                    "head_dim=16", "window=2", "input=[3,64,64]"])]


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides", CONDITION_FAMILIES, ids=[n for n, _ in CONDITION_FAMILIES])
def test_build_emit_onnx_then_import_through_the_command_line(name, overrides, tmp_path):
    """What failed from the command line: `archc import m.onnx` in a fresh process wrote a spec it could not
    read (its conditions read the block's input shape). The import runs as a user runs it and verifies the
    spec it wrote against onnxruntime running the file (the same logits); the spec loads, builds with the
    weights written beside it and has the exported network's parameters. (The export, which never failed,
    runs here: one torch start-up less per family.)"""
    pytest.importorskip("onnxscript")
    from archcompiler.backends.torch.export import export

    spec = archcompiler.load_spec(name, overrides)
    # trained-like weights: a fresh network's zero biases and equal BatchNorm tensors are folded or shared by
    # the exporter's optimiser, which archc import does not read back yet (issue 32)
    export(_trained(archcompiler.build(spec, seed=0)).eval(), spec, "onnx", tmp_path / "m.onnx", keep_batch_norm=True)
    done = run_archc("import", "m.onnx", "-o", "m.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote m.yaml and m.safetensors" in done.stdout
    assert "archc: verified: the spec's outputs equal the source's" in done.stderr, done.stderr
    imported = archcompiler.load_spec(tmp_path / "m.yaml")
    rebuilt = archcompiler.build(imported, weights=str(tmp_path / "m.safetensors"))
    params = archcompiler.analyze(spec)["total"]["params"]
    assert archcompiler.analyze(imported)["total"]["params"] == params == sum(p.numel() for p in rebuilt.parameters())


def test_importing_torchvision_without_it_says_the_command_that_fits_this_torch(tmp_path):
    """torchvision is no dependency: `archc import torchvision.models:...` without it names the install
    command for the torch that is there (the pairing the README's Import section gives), in a fresh process."""
    fake = tmp_path / "hide" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torchvision'\", name='torchvision')\n")
    done = run_archc("import", "torchvision.models:resnet18", env={"PYTHONPATH": str(tmp_path / "hide")})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    version = torch.__version__.split("+")[0]
    minor = int(version.split(".")[1])
    assert f"pip install torch=={version} torchvision==0.{minor + 15}.*" in done.stderr, done.stderr
    readme = (ROOT / "README.md").read_text()
    assert "torch 2.N pairs with torchvision 0.(N+15)" in readme
    assert "pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu" in readme


DLA_LIKE = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class Tree(nn.Module):
    """DLA's pattern: two consecutive uses of one block (tree1, tree2), both read by the root."""

    def __init__(self, c):
        super().__init__()
        self.tree1 = Block(c)
        self.tree2 = Block(c)
        self.root = nn.Conv2d(2 * c, c, 1)

    def forward(self, x):
        a = self.tree1(x)
        b = self.tree2(a)
        return self.root(torch.cat([b, a], 1))


class Root3(Tree):
    """Another tree: its root also reads the tree's input."""

    def __init__(self, c):
        super().__init__(c)
        self.root = nn.Conv2d(3 * c, c, 1)

    def forward(self, x):
        a = self.tree1(x)
        b = self.tree2(a)
        return self.root(torch.cat([b, a, x], 1))


class Net(nn.Module):
    INPUT_SHAPE = (3, 16, 16)

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.level1 = Tree(8)
        self.level2 = Root3(8)
        self.level3 = nn.Sequential(Block(8), Block(8))
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.level3(self.level2(self.level1(self.stem(x)))).mean((2, 3)))
'''


def _dla_like(tmp_path):
    import importlib.util

    (tmp_path / "dla_like.py").write_text(DLA_LIKE)
    where = importlib.util.spec_from_file_location("dla_like", tmp_path / "dla_like.py")
    module = importlib.util.module_from_spec(where)
    where.loader.exec_module(module)
    original = module.Net().eval()
    torch.manual_seed(0)
    for p in original.parameters():
        p.data.normal_(0, 0.5)
    return original


def _computes_the_same(text: str, original) -> bool:
    rebuilt = archcompiler.build(archcompiler.load_spec(text)).eval()
    rebuilt.load_state_dict(original.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.allclose(rebuilt(x), original(x), rtol=1e-5, atol=1e-5)


def test_two_uses_of_a_block_whose_outputs_are_both_read_are_not_folded_into_a_row(tmp_path, monkeypatch):
    """A table row names only its last instance's output: dla34 imported with tree1 and tree2 folded into
    `repeat: 2` had equal params and MACs and other logits. Consecutive uses become a row only where
    nothing but the next use reads each output; the import computes what the module computes. The check
    itself catches the mis-wiring: with the old rule (any consecutive uses fold), it fails."""
    original = _dla_like(tmp_path)
    done = run_archc("import", "dla_like.py:Net", "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "net.yaml").read_text()
    assert "blocks:" in text
    assert _computes_the_same(text, original)
    from archcompiler.importers import blocks

    monkeypatch.setattr(blocks, "_read_only_by", lambda *args: True)
    folded = archcompiler.import_module(original, name="Net", verify=False)
    assert not _computes_the_same(folded, original), folded
    # verified (the default), the mis-wired blocks never come out: the exact one-layer-per-line form does
    checked = archcompiler.import_module(original, name="Net")
    assert "blocks:" not in checked and _computes_the_same(checked, original)
    # and diff --layers tells the two apart by their wiring (same ops, shapes and counts): the root reads
    # tree2's and tree1's outputs in one, tree2's twice in the other
    (tmp_path / "folded.yaml").write_text(folded)
    done = run_archc("diff", "net.yaml", "folded.yaml", "--layers", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    import json

    rows = [r for r in json.loads(done.stdout)["rows"] if r["status"] != "same"]
    assert rows and all("reads" in r["changes"] for r in rows), rows
    assert any(r["name"] == "level1.root" for r in rows), rows


def test_the_command_verifies_and_says_when_it_fell_back_to_one_layer_per_line(tmp_path):
    """Through the CLI in a fresh process (its table rule made to mis-wire, as dla34's was): the spec written
    is the exact flat one, and stderr says why; the readable form of a correct import says it was verified."""
    original = _dla_like(tmp_path)
    probe = ("import sys\nfrom archcompiler.importers import blocks\nblocks._read_only_by = lambda *a: True\n"
             "sys.argv = ['archc', 'import', 'dla_like.py:Net', '-o', 'net.yaml']\n"
             "from archcompiler.cli import entry\nentry()\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "wrote one layer per line instead, which is exact" in done.stderr and "Traceback" not in done.stderr
    text = (tmp_path / "net.yaml").read_text()
    assert "blocks:" not in text and _computes_the_same(text, original)
    done = run_archc("import", "dla_like.py:Net", "-o", "good.yaml", cwd=tmp_path)
    assert done.returncode == 0 and "verified: the spec's outputs equal the source's" in done.stderr, done.stderr


def test_an_import_that_computes_something_else_is_refused_naming_the_first_layer_that_differs(tmp_path, monkeypatch):
    """A mapping gone wrong (ReLU read as a sigmoid: same shapes, same weights, other values) is never written:
    the error names the first layer whose output differs, in the order the spec runs."""
    from archcompiler.ops import FromTorch, registry

    original = _dla_like(tmp_path)
    relu = registry().from_torch["fn:relu"]
    monkeypatch.setitem(registry().from_torch, "fn:relu", FromTorch(relu.kind, lambda s: {"op": "sigmoid"}))
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(original, name="Net")
    message = info.value.errors[0].format()
    assert "does not compute what the module does" in message
    assert "the first layer whose output differs is level1.tree1.conv2" in message, message


@pytest.mark.parametrize("source, said", [
    ("import torch\nclass Net(torch.nn.Module):\n    def __init__(self:\n        pass\n",
     "importing 'net.py' failed at {}:3:17: SyntaxError: '(' was never closed"),
    ("import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
     "        self.fc = torch.nn.Linear(3, 1 // 0)\n",
     "calling net.py:Net failed at {}:5: ZeroDivisionError: integer division or modulo by zero"),
    ("raise RuntimeError('no GPU here')\n", "importing 'net.py' failed at {}:1: RuntimeError: no GPU here"),
])
def test_a_module_whose_own_code_fails_is_said_with_its_place_not_an_internal_error(source, said, tmp_path):
    (tmp_path / "net.py").write_text(source)
    done = run_archc("import", "net.py:Net", "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 1 and "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert said.format(tmp_path / "net.py") in done.stderr, done.stderr
    assert not (tmp_path / "net.yaml").exists()


def test_a_shortcut_some_uses_leave_out_reads_its_stride_from_the_blocks_argument():
    """Three residual blocks, the first two with a strided projection shortcut: the shortcut's stride is
    the block's ``stride``, not the literal 2 both its uses happen to have."""
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \
                if stride != 1 or cin != cout else nn.Identity()

        def forward(self, x):
            return (self.bn2(self.conv2(self.bn1(self.conv1(x)).relu())) + self.short(x)).relu()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, 1, 1)
            self.layers = nn.Sequential(Block(16, 32, 2), Block(32, 64, 2), Block(64, 64, 1))
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(self.layers(self.stem(x)).mean((2, 3)))

    text = archcompiler.import_module(Net(), input=(3, 32, 32))
    short = next(line for line in text.splitlines() if "name: short.0" in line)
    assert "stride: stride" in short and "when:" in short, short


def test_a_module_ending_in_its_softmax_is_verified_on_its_probabilities():
    """The spec's final softmax is its probability output (forward gives the logits): the import compares
    what the source returns, probabilities, with the built module's predict_proba."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            return F.softmax(self.fc(self.conv(x).mean((2, 3))), -1)

    text = archcompiler.import_module(Net(), input=(3, 16, 16))
    assert text.rstrip().endswith("{name: softmax, op: softmax}")


def test_a_patch_convolutions_flattened_map_read_as_it_is_is_refused_not_an_internal_error():
    """x = conv(x).flatten(2) (C x N, a ViT's patches before their transpose) read by another call: a one-line
    refusal; it was an IndexError inside the MobileViT patch reading, which shared the state's name."""
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(3, 16, 4, 4)
            self.norm = nn.LayerNorm(64)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            return self.fc(self.norm(self.proj(x).flatten(2)).mean(2))

    with pytest.raises(BackendError, match="norm"):
        archcompiler.import_module(Net(), input=(3, 32, 32))
