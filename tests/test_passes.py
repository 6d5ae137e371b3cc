"""Each analysis pass alone, on small graphs whose answers are known."""

from __future__ import annotations

import pytest
from conftest import SPECS

import archcompiler
from archcompiler import load_spec, lower
from archcompiler.passes import annotate_cost, annotate_memory, annotate_receptive_field, infer_shapes, network_depth


def graph(text: str):
    g = lower(load_spec(text))
    infer_shapes(g)
    annotate_cost(g)
    return g


CHAIN = """\
name: chain
input: [1, 8, 8]
layers:
  - {name: a, op: conv, out: 2, kernel: 3, padding: 1}
  - {name: b, op: conv, out: 4, kernel: 3, padding: 1}
  - {name: c, op: conv, out: 1, kernel: 3, padding: 1}
"""


def test_shapes_are_on_nodes_and_edges():
    g = graph(CHAIN)
    assert g.nodes["b"]["shape"] == (4, 8, 8)
    assert g.edges["a", "b"]["shape"] == (2, 8, 8)


def test_cost_separates_weights_biases_and_buffers():
    g = graph("name: t\ninput: [3, 4, 4]\nlayers:\n  - {name: c, op: conv, out: 5, kernel: 3, norm: batch_norm}\n")
    conv, bn = g.nodes["c/conv"], g.nodes["c/bn"]
    assert (conv["params"].weights, conv["params"].biases) == (5 * 3 * 9, 0)
    assert (bn["params"].weights, bn["params"].biases, bn["params"].buffers) == (5, 5, 11)
    assert conv["macs"] == 5 * 2 * 2 * 3 * 9 and bn["macs"] == 0 and bn["elementwise"] == 5 * 2 * 2


def test_peak_memory_of_a_chain():
    g = graph(CHAIN)
    # live tensors: input 64 (held by the caller throughout), a 128, b 256, c 64 elements; a chain
    # frees each intermediate tensor after its use
    peak = annotate_memory(g, batch=1, bytes_per_element=4)
    assert peak == 4 * (64 + max(128, 128 + 256, 256 + 64))
    assert annotate_memory(g, batch=3) == 3 * peak


def test_peak_memory_keeps_branch_inputs_alive():
    g = graph("""\
        name: fork
        input: [1, 4, 4]
        layers:
          - {name: a, op: conv, out: 2, kernel: 1}
          - {name: b, op: conv, out: 2, kernel: 1, input: input}
          - {name: cat, op: concat, inputs: [a, b]}
        """.replace("        ", ""))
    # a stays live until cat has run: input 16 (held by the caller) + a 32 + b 32 + cat 64 at the peak
    assert annotate_memory(g) == 4 * (16 + 32 + 32 + 64)


def test_receptive_field_of_vgg16_matches_the_known_values():
    g = graph((SPECS / "vgg16.yaml").read_text())
    annotate_receptive_field(g)
    expected = {"conv1_1/conv": 3, "pool1": 6, "conv2_2/conv": 14, "pool2": 16, "conv3_3/conv": 40,
                "pool3": 44, "conv4_3/conv": 92, "pool4": 100, "conv5_3/conv": 196, "pool5": 212}
    for node, size in expected.items():
        assert g.nodes[node]["rf"]["size"] == (size, size), node
    assert g.nodes["pool5"]["rf"]["jump"] == (32, 32)


@pytest.mark.parametrize("kernel, stride, padding, start", [(3, 1, 1, 0.0), (3, 2, 0, 1.0), (7, 2, 3, 0.0),
                                                             (2, 2, 0, 0.5)])
def test_receptive_field_start(kernel, stride, padding, start):
    g = graph(f"name: t\ninput: [1, 32, 32]\nlayers:\n  - {{name: c, op: conv, out: 1, kernel: {kernel}, "
              f"stride: {stride}, padding: {padding}}}\n")
    annotate_receptive_field(g)
    assert g.nodes["c"]["rf"] == {"size": (kernel, kernel), "jump": (stride, stride), "start": (start, start)}


def test_receptive_field_of_dilated_conv():
    g = graph("name: t\ninput: [1, 32, 32]\nlayers:\n  - {name: c, op: conv, out: 1, kernel: 3, dilation: 2}\n"
              "  - {name: d, op: conv, out: 1, kernel: 3}\n")
    annotate_receptive_field(g)
    assert g.nodes["c"]["rf"]["size"] == (5, 5) and g.nodes["d"]["rf"]["size"] == (7, 7)


def test_depth_counts_the_longest_path():
    g = graph((SPECS / "resnet18.yaml").read_text())
    assert network_depth(g) == 18               # the "18" of ResNet-18 (the shortcut is shorter)
    assert network_depth(g, with_pooling=True) == 20


def test_training_only_nodes_leave_inference_totals():
    report = archcompiler.analyze(SPECS / "googlenet.yaml")
    aux = [r for r in report["rows"] if r["training_only"]]
    assert {r["name"] for r in aux} == {"aux1", "aux2"}
    extra = report["total"]["with_training_heads"]["params"] - report["total"]["params"]
    assert extra == sum(r["params"] for r in aux)


def test_lowering_names_and_locations():
    spec = load_spec(SPECS / "googlenet-torchvision.yaml")
    g = lower(spec)
    node = g.nodes["inception_4b/3x3_reduce/conv"]
    assert node["op"] == "conv2d" and node["layer"] == "inception_4b/3x3_reduce"
    assert node["row"] == "inception_4b" and node["group"] == "inception_4b"
    assert node["loc"].file.endswith("googlenet.yaml") and node["loc"].line > 0
    assert g.nodes["inception_4b/3x3_reduce/bn"]["op"] == "batch_norm2d"
    assert node["inputs"] == ["inception_4a/output"]


def test_totals_per_op_kind_add_up():
    report = archcompiler.analyze(SPECS / "googlenet.yaml")
    kinds = report["by_op"]
    assert kinds["conv2d"]["count"] == 57 + 0 and kinds["linear"]["count"] == 1
    assert sum(k["macs"] for k in kinds.values()) == report["total"]["macs"]
    assert sum(k["params"] for k in kinds.values()) == report["total"]["params"]
    assert list(kinds)[0] == "conv2d"


def test_totals_per_stage_follow_the_resolutions():
    report = archcompiler.analyze(SPECS / "googlenet.yaml")
    stages = {s["resolution"]: s for s in report["stages"]}
    assert stages["28x28"]["rows"] == ["pool2", "inception_3a", "inception_3b"]
    assert stages["14x14"]["rows"] == ["pool3", "inception_4a", "inception_4b", "inception_4c", "inception_4d",
                                        "inception_4e"]
    assert sum(s["macs"] for s in report["stages"]) == report["total"]["macs"]
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["inception_3a"]["activation_bytes"] == 4 * 256 * 28 * 28
