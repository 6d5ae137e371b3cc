"""MaxViT-T (specs/maxvit.yaml) as a user works with it: the paper's stages, each block an MBConv, block
attention and grid attention; the grid groups the positions torchvision's partition-and-swap groups;
the relative position index archc builds is torchvision's; the paper's numbers are the network's
claims; --set, --optimize, the emitted module, memory against a measurement, ONNX and `archc flops`
without torch. Keys, parameters, FLOPs and logits against torchvision are tests/test_zoo.py's
(tests/data/torchvision_maxvit.json)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from conftest import DATA, ROOT, assert_onnx_matches

import archcompiler
from archcompiler import GraphError, SpecError

REFERENCE = json.loads((DATA / "torchvision_maxvit.json").read_text())["builders"]["maxvit_t"]
SMALL = ["input=[3,64,64]", "window=2", "num_classes=10", "stem=16", "C1=32", "C2=32", "C3=64", "C4=64"]   # 16x16 .. 2x2


def _attention_nodes(overrides=None):
    from archcompiler.passes import annotated_graph

    g = annotated_graph(archcompiler.load_spec("maxvit_t", overrides=overrides))
    return {n: (d["attrs"], d["shape"]) for n, d in g.nodes(data=True) if d["op"] == "window_attention"}


def test_the_stages_are_the_papers_and_each_block_attends_locally_then_globally():
    p = archcompiler.load_spec("maxvit_t").params
    assert [p[f"C{k}"] for k in range(1, 5)] == [64, 128, 256, 512] and [p[f"B{k}"] for k in range(1, 5)] == [2, 2, 5, 2]
    nodes = _attention_nodes()
    assert len(nodes) == 2 * 11
    for stage, (c, size) in enumerate([(64, 56), (128, 28), (256, 14), (512, 7)], 1):
        attrs, shape = nodes[f"stage{stage}/0/window_attention/attn"]
        assert not attrs["grid"] and attrs["heads"] == c // 32 and shape == (c, size, size)
        attrs, shape = nodes[f"stage{stage}/0/grid_attention/attn"]
        assert attrs["grid"] and attrs["window"] == 7 and attrs["layout"] == "maxvit"


def test_the_papers_numbers_are_the_network_claims_and_hold():
    spec = archcompiler.load_spec("maxvit_t")
    assert (spec.claims.params, spec.claims.ops) == ("31M", "5.6G")
    assert archcompiler.check(spec) == []


def test_grid_attention_groups_the_positions_torchvisions_partition_and_swap_group():
    """torchvision: WindowPartition with p = H / P, then SwapAxes(-2, -3): group (a, b) holds the positions
    (i * p + a, j * p + b). The same module on those groups, one by one, gives archc's output."""
    torch = pytest.importorskip("torch")
    from archcompiler.backends.torch.runtime import WindowAttention

    torch.manual_seed(0)
    b, c, h, w, size = 2, 8, 12, 9, 3
    grid = WindowAttention(c, 2, size, 0, False, False, 0.0, h, w, True, True).eval()
    local = WindowAttention(c, 2, size, 0, False, False, 0.0, size, size, False, True).eval()
    local.load_state_dict(grid.state_dict())
    x = torch.randn(b, h, w, c)
    ph, pw = h // size, w // size
    with torch.no_grad():
        got = grid(x)
        for a in range(ph):
            for bb in range(pw):
                group = x[:, a::ph, bb::pw]                      # a size x size grid, ph and pw apart
                assert torch.allclose(got[:, a::ph, bb::pw], local(group), atol=1e-6)


def test_a_grid_that_does_not_tile_the_map_is_a_located_error():
    text = ("name: t\ninput: [3, 40, 40]\nlayers:\n  - {name: c, op: conv, out: 8, kernel: 4, stride: 4}\n"
            "  - {name: a, op: window_attention, heads: 2, window: 3, grid: true, layout: maxvit}\n")
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(text)
    (problem,) = info.value.errors
    assert "3x3 grid" in problem.message and "10x10x8" in problem.message and problem.line == 5
    with pytest.raises(SpecError) as info:          # at another size the partition of a block must tile too
        archcompiler.load_spec("maxvit_t", overrides=["input=[3,192,192]"])
    assert "does not tile" in str(info.value)


def test_the_relative_position_index_archc_builds_is_torchvisions():
    torch = pytest.importorskip("torch")
    from archcompiler.backends.torch.runtime import WindowAttention

    module = WindowAttention(64, 2, 7, 0, False, False, 0.0, 7, 7, True, True)
    index = module.relative_position_index
    assert index.dtype == torch.int64 and list(index.shape) == [49, 49]
    digest = hashlib.sha256(json.dumps(index.flatten().tolist(), separators=(",", ":")).encode()).hexdigest()
    assert {digest} == set(REFERENCE["int_buffers_sha256"].values())


def test_flops_of_maxvit_t_never_imports_torch():
    code = ("import sys\nfrom archcompiler.cli import main\nassert main(['flops', 'maxvit_t']) == 0\n"
            "assert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{REFERENCE['params']:,} params" in done.stdout and f"{REFERENCE['flops'] // 2:,} multiply-adds" in done.stdout


@pytest.mark.slow
def test_optimize_and_the_emitted_module_give_the_same_output(tmp_path):
    torch = pytest.importorskip("torch")
    import importlib.util

    from archcompiler.cli import main

    model = archcompiler.build("maxvit_t", overrides=SMALL, seed=0).eval()
    fast = archcompiler.build("maxvit_t", overrides=SMALL, weights=model.state_dict(), optimize=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = model(x), fast(x)
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    out = tmp_path / "maxvit_module.py"
    sets = [arg for value in SMALL for arg in ("--set", value)]
    assert main(["build", "maxvit_t", *sets, "--emit", "python", "-o", str(out), "-q"]) == 0
    module_spec = importlib.util.spec_from_file_location("maxvit_module", out)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    emitted = module.MaxVit()
    emitted.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(emitted.eval()(x), expected)


@pytest.mark.slow
def test_a_small_maxvits_peak_memory_is_measured_exactly():
    torch = pytest.importorskip("torch")
    from archcompiler.measure.memory import measure_peak_activation_bytes

    spec = archcompiler.load_spec("maxvit_t", overrides=SMALL)
    model = archcompiler.build(spec, seed=0)
    for batch in (1, 3):
        assert archcompiler.analyze(spec, batch=batch)["peak_activation_bytes"] == \
            measure_peak_activation_bytes(model, torch.randn(batch, 3, 64, 64))


@pytest.mark.slow
def test_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    # one block a stage: each block has its MBConv, window and grid attention (the export's cost is per block)
    assert_onnx_matches(archcompiler.load_spec("maxvit_t", overrides=[*SMALL, "B1=1", "B2=1", "B3=1", "B4=1"]),
                        tmp_path / "m.onnx")
