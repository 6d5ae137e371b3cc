"""archc import (issue #24): a PyTorch module becomes a readable spec that builds the same network.

The modules imported here are archc's own zoo modules (they have torchvision's state_dict keys;
torchvision is no dependency): build a zoo builder, import the built module, build the imported
spec, load the original state_dict strictly, and compare logits, parameters and FLOPs. The check
against torchvision's own modules runs in the side environment (benchmarks/RESULTS.md)."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

import archcompiler
from archcompiler import BackendError

torch = pytest.importorskip("torch")
nn = torch.nn

QUICK = ["resnet18", "mobilenet_v2", "googlenet"]
SLOW = ["resnet50", "vgg16", "densenet121", "squeezenet1_1", "efficientnet_b0", "mnasnet0_5", "mobilenet_v3_large",
        "alexnet", "regnet_x_400mf", "inception_v3"]


def _round_trip(name: str) -> str:
    spec = archcompiler.load_spec(name)
    original = archcompiler.build(spec, seed=0).eval()
    text = archcompiler.import_module(original, name=name)
    imported = archcompiler.load_spec(text)
    a, b = archcompiler.analyze(spec)["total"], archcompiler.analyze(imported)["total"]
    assert (a["params"], a["macs"], a["flops"]) == (b["params"], b["macs"], b["flops"])
    rebuilt = archcompiler.build(imported).eval()
    rebuilt.load_state_dict(original.state_dict(), strict=True)
    assert list(rebuilt.state_dict()) == list(original.state_dict()) or name == "googlenet"
    x = torch.randn(1, *spec.input, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x), rtol=0, atol=0)
    return text


@pytest.mark.parametrize("name", QUICK + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW])
def test_an_imported_zoo_module_builds_the_same_network(name):
    text = _round_trip(name)
    assert text.startswith("# yaml-language-server: $schema=")
    assert "Imported by archc from" in text.splitlines()[2]


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


def test_googlenet_is_the_inception_block_and_table_1s_rows():
    original = archcompiler.build(archcompiler.load_spec("googlenet"), seed=0)
    text = archcompiler.import_module(original, name="googlenet")
    import yaml
    doc = yaml.safe_load(text)
    uses = [r[0] for layer in doc["layers"] if layer.get("table", {}).get("use") == "inception"
            for r in layer["table"]["rows"]] + [layer["name"] for layer in doc["layers"] if layer.get("use") == "inception"]
    assert list(doc["blocks"])[0] == "inception" and sorted(uses) == [f"inception{k}" for k in
                                                                       ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")]


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
    from archcompiler.backends.torch.codegen import FROM_TORCH, TORCH_OPS
    from archcompiler.ir import OPS

    assert {e.kind for e in FROM_TORCH.values()} <= set(OPS) == set(TORCH_OPS)


# ----------------------------------------------------------------------------- the command


def test_the_command_writes_the_spec_atomically_and_leaves_nothing_on_failure(tmp_path, capsys):
    from archcompiler.cli import main

    out = tmp_path / "net.yaml"
    assert main(["import", "archcompiler:build", "--arg", "spec_or_path=resnet18", "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# yaml-language-server: $schema=") and "archcompiler:build --arg spec_or_path=resnet18" in text
    assert archcompiler.analyze(archcompiler.load_spec(out))["total"]["params"] == 11_689_512
    module = tmp_path / "custom.py"
    module.write_text("import torch\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n"
                      "        return torch.cumsum(x, 1)\n")
    bad = tmp_path / "bad.yaml"
    assert main(["import", f"{module}:Net", "-o", str(bad)]) == 1
    assert "has no archc op" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.py", "net.yaml"]
