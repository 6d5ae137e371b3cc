"""Swin and Swin V2 (specs/swin.yaml, the paper's variants; specs/swin_v2.yaml) as a user works with
them: the variants are the paper's rows, the blocks alternate regular and shifted windows, the window
must tile the map (or be padded to, as torchvision pads), the relative position index archc builds is
torchvision's, the papers' numbers are the network's claims; diff, --set, --optimize, ONNX, latency
and `archc flops` without torch. Keys, parameters, FLOPs and logits against torchvision are
tests/test_zoo.py's (tests/data/torchvision_swin.json)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from conftest import DATA, ROOT, assert_onnx_matches, meta_layout

import archcompiler
from archcompiler import GraphError

REFERENCE = json.loads((DATA / "torchvision_swin.json").read_text())["builders"]
VARIANTS = {"T": (96, (2, 2, 6, 2), (3, 6, 12, 24)), "S": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
            "B": (128, (2, 2, 18, 2), (4, 8, 16, 32))}
BUILDERS = {"swin_t": ("T", 7), "swin_s": ("S", 7), "swin_b": ("B", 7),
            "swin_v2_t": ("T", 8), "swin_v2_s": ("S", 8), "swin_v2_b": ("B", 8)}


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_each_builder_is_its_variants_row(builder):
    size, window = BUILDERS[builder]
    p = archcompiler.load_spec(builder).params
    c, layers, heads = VARIANTS[size]
    assert (p["size"], p["window"], p["patch"], p["dim"], p["heads"]) == (size, window, 4, c, heads[0])
    nodes = _attention_nodes(builder)
    for k, (n_blocks, n_heads) in enumerate(zip(layers, heads)):
        stage = [(a, s) for n, (a, s) in nodes.items() if n.startswith(f"stage{k + 1}/")]
        assert len(stage) == n_blocks
        assert {(a["heads"], s[0]) for a, s in stage} == {(n_heads, c * 2 ** k)}


def _attention_nodes(builder, overrides=None):
    from archcompiler.passes import annotated_graph

    g = annotated_graph(archcompiler.load_spec(builder, overrides=overrides))
    return {n: (d["attrs"], d["shape"]) for n, d in g.nodes(data=True) if d["op"] == "window_attention"}


def test_blocks_alternate_regular_and_shifted_windows_with_their_stages_heads():
    nodes = _attention_nodes("swin_t")
    assert len(nodes) == 12
    assert [a["shift"] for a, _ in nodes.values()] == [0, 3] * 6
    assert nodes["stage1/0/attn"][1] == (96, 56, 56) and nodes["stage4/1/attn"][1] == (768, 7, 7)
    assert (nodes["stage3/5/attn"][0]["heads"], nodes["stage4/1/attn"][0]["heads"]) == (12, 24)
    v2 = _attention_nodes("swin_v2_t")
    assert all(a["cosine"] and a["window"] == 8 for a, _ in v2.values())


def test_the_papers_numbers_are_the_network_claims_and_hold():
    assert archcompiler.load_spec("swin_t").claims.params == "28M"
    assert archcompiler.load_spec("swin_b").claims.ops == "15.4G"
    for builder in ("swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_b"):
        assert archcompiler.check(builder) == [], builder


def test_swin_v2_at_its_training_size_counts_torchvisions_multiply_adds():
    """torchvision's weights were trained at 256x256, where window 8 tiles every map: its GFLOPS (multiply-adds)."""
    macs = archcompiler.analyze("swin_v2_t", overrides=["input=[3,256,256]"])["total"]["macs"]
    assert round(macs / 1e9, 2) == REFERENCE["swin_v2_t"]["tv_meta"]["gflops"]


def test_a_window_that_does_not_tile_the_map_is_a_located_error_naming_both_shapes():
    text = ("name: t\ninput: [3, 32, 32]\nlayers:\n  - {name: c, op: conv, out: 8, kernel: 4, stride: 4}\n"
            "  - {name: a, op: window_attention, heads: 2, window: 3}\n")
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(text)
    (problem,) = info.value.errors
    assert "window 3x3" in problem.message and "8x8x8" in problem.message and problem.line == 5
    assert archcompiler.analyze(text.replace("window: 3}", "window: 3, pad: true}"))["total"]["params"] > 0


def test_heads_that_do_not_divide_the_channels_are_an_error():
    with pytest.raises(GraphError) as info:
        archcompiler.analyze("swin_t", overrides=["heads=5"])
    assert "heads=5" in str(info.value) and "96" in str(info.value)


def test_the_relative_position_index_archc_builds_is_torchvisions():
    torch = pytest.importorskip("torch")
    from archcompiler.backends.torch.runtime import WindowAttention

    def digest(t):
        return hashlib.sha256(json.dumps(t.tolist(), separators=(",", ":")).encode()).hexdigest()

    for builder, window, cosine in (("swin_t", 7, False), ("swin_v2_t", 8, True)):
        expected = set(REFERENCE[builder]["int_buffers_sha256"].values())
        module = WindowAttention(8, 2, window, 0, False, cosine, 0.0, window, window)
        assert module.relative_position_index.dtype == torch.int64
        assert {digest(module.relative_position_index)} == expected
    # and in the built network, under torchvision's key of every block
    keys = dict((k, s) for k, s in meta_layout("swin_t")[0])
    assert set(REFERENCE["swin_t"]["int_buffers_sha256"]) <= set(keys)


def test_diff_of_swin_t_and_swin_s_reads_as_the_third_stage(capsys):
    from archcompiler.cli import main

    assert main(["diff", "swin_t", "swin_s"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "spec params: size T -> S"
    grown = [line.split()[0] for line in out if " changed " in line and not line.endswith(" 0       0")]
    assert grown == ["stage3"] and "    #repeat: 6 -> 18" in out     # the others: stochastic depth's rates


def test_the_window_and_the_image_size_are_set_like_any_parameter():
    pytest.importorskip("torch")
    keys = dict((k, s) for k, s in meta_layout("swin_t", ["window=8", "input=[3,256,256]"])[0])
    assert keys["features.1.0.attn.relative_position_bias_table"] == [225, 3]
    assert keys["features.1.0.attn.relative_position_index"] == [4096]
    assert archcompiler.analyze("swin_v2_t", overrides=["input=[3,256,256]"])["rows"][2]["output"] == [96, 64, 64]


def test_flops_of_swin_b_never_imports_torch():
    code = ("import sys\nfrom archcompiler.cli import main\nassert main(['flops', 'swin_b']) == 0\n"
            "assert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{REFERENCE['swin_b']['params']:,} params" in done.stdout


def test_latency_times_window_attention_as_attention_and_patch_merging_as_a_1x1_convolution():
    from archcompiler.ir import OPS
    from archcompiler.passes import annotated_graph

    g = annotated_graph(archcompiler.load_spec("swin_t"))
    kinds = {}
    for n, d in g.nodes(data=True):
        ins = [g.nodes[p]["shape"] for p in d["inputs"]]
        kinds[n] = OPS[d["op"]].latency.kernel(d["attrs"], ins, d["shape"]).kind
    assert kinds["stage1/0/attn"] == "attention" and kinds["merge2"] == "conv1x1"
    assert kinds["stage1/0/mlp_1"] == "conv1x1"


SMALL = ["input=[3,64,64]", "num_classes=10", "dim=16", "heads=1"]     # 16x16 .. 2x2 maps, padded


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["swin_t", "swin_v2_t"])
def test_optimize_and_emitted_python_give_the_same_output(builder, tmp_path):
    torch = pytest.importorskip("torch")
    model = archcompiler.build(builder, overrides=SMALL, seed=0).eval()
    fast = archcompiler.build(builder, overrides=SMALL, weights=model.state_dict(), optimize=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = model(x), fast(x)
    assert (got - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
    # the emitted module is standalone: it carries WindowAttention and PatchMerging and loads the weights
    import importlib.util

    from archcompiler.cli import main

    out = tmp_path / "swin_module.py"
    sets = [arg for value in SMALL for arg in ("--set", value)]
    assert main(["build", builder, *sets, "--emit", "python", "-o", str(out), "-q"]) == 0
    text = out.read_text()
    assert "class WindowAttention(nn.Module)" in text and "class PatchMerging(nn.Module)" in text
    module_spec = importlib.util.spec_from_file_location("swin_module", out)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    emitted = getattr(module, "SwinTransformerV2" if "v2" in builder else "SwinTransformer")()
    emitted.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(emitted.eval()(x), expected)


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["swin_t", "swin_v2_t"])
def test_onnx_export_matches_torch(builder, tmp_path):
    pytest.importorskip("onnxruntime")
    # stage 3 with two blocks, as the others: each stage keeps a plain and a shifted block
    assert_onnx_matches(archcompiler.load_spec(builder, overrides=[*SMALL, "variants.rows.L3=[2,2,2]"]),
                        tmp_path / "m.onnx")


@pytest.mark.slow
def test_a_small_swin_trains_a_step():
    torch = pytest.importorskip("torch")
    model = archcompiler.build("swin_t", overrides=SMALL, seed=0).train()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    loss = model.loss(model(x), y)
    loss.backward()
    assert model.get_submodule("features.1.0.attn").relative_position_bias_table.grad is not None


# ----------------------------------------------------------------------------- memory against a measurement

def test_the_ops_transient_memory_is_what_torch_allocates():
    """window_attention (V1 and V2, padded or not, shifted or not, one window across or many) and
    patch_merging, in random small configurations: the op table's workspace is the measured peak
    beyond the op's input and output, for batches of 1 to 3."""
    import random

    torch = pytest.importorskip("torch")
    from archcompiler.backends.torch.runtime import PatchMerging, WindowAttention
    from archcompiler.ir import OPS
    from archcompiler.measure.memory import LiveTensors

    def transient(module, x):
        with torch.no_grad(), LiveTensors(ignore=[*module.parameters(), *module.buffers()]) as tracker:
            tracker.hold(x)
            y = module.eval()(x)
        return (tracker.peak - 4 * x.numel() - y.untyped_storage().nbytes()) // 4

    r = random.Random("swin memory")
    for _ in range(24):
        batch, heads, win = r.choice([1, 2, 3]), r.choice([1, 2, 3]), r.choice([2, 3, 4, 7])
        c, h, w, shift, cosine = heads * r.choice([1, 2, 8]), r.randint(2, 12), r.randint(2, 12), r.choice([0, 1]), \
            r.choice([False, True])
        attrs = {"heads": heads, "window": win, "shift": shift * (win // 2), "pad": True, "cosine": cosine}
        module = WindowAttention(c, heads, win, attrs["shift"], True, cosine, 0.0, h, w)
        expected = OPS["window_attention"].batch_workspace(attrs, [(c, h, w)], (c, h, w), batch)
        assert transient(module, torch.randn(batch, c, h, w).permute(0, 2, 3, 1)) == expected, (batch, attrs, c, h, w)
        norm, out = r.choice(["before", "after"]), r.choice([2 * c, 5])
        merged = (out, (h + 1) // 2, (w + 1) // 2)
        expected = batch * OPS["patch_merging"].workspace({"norm": norm}, [(c, h, w)], merged)
        module = PatchMerging(c, out, norm == "after", 1e-5)
        assert transient(module, torch.randn(batch, c, h, w).permute(0, 2, 3, 1)) == expected, (batch, norm, c, h, w)


def test_what_autograd_keeps_of_window_attention_is_the_op_tables():
    """Per sample (``saves``) and once per forward (``saves_once``: Swin V2's position-bias MLP), from
    the tensors autograd's saved-tensor hooks see, at batches of 1 and 2."""
    import random

    torch = pytest.importorskip("torch")
    from archcompiler.backends.torch.runtime import WindowAttention
    from archcompiler.ir import OPS

    def kept(module, x):
        own = {t.untyped_storage()._cdata for t in [*module.parameters(), *module.buffers()]}
        seen = {}

        def pack(t):
            if t.untyped_storage()._cdata not in own:
                seen[t.untyped_storage()._cdata] = t.untyped_storage().nbytes() // 4
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            module.train()(x)
        return sum(seen.values())

    r = random.Random("swin saves")
    for _ in range(8):
        heads, win, cosine = r.choice([2, 3]), r.choice([3, 4, 7]), r.choice([False, True])
        c, h, w, shift = 4 * heads, r.randint(3, 12), r.randint(3, 12), r.choice([0, 1])
        attrs = {"heads": heads, "window": win, "shift": shift * (win // 2), "pad": True, "cosine": cosine, "grid": False}
        module = WindowAttention(c, heads, win, attrs["shift"], True, cosine, 0.0, h, w)
        kinds, elements = OPS["window_attention"].saves(attrs, [(c, h, w)], (c, h, w))
        per_sample = elements + (c * h * w if "input" in kinds else 0)
        once = OPS["window_attention"].saves_once(attrs, [(c, h, w)], (c, h, w))
        for batch in (1, 2):
            x = torch.randn(batch, c, h, w, requires_grad=True).permute(0, 2, 3, 1)
            assert kept(module, x) == batch * per_sample + once, (batch, attrs, c, h, w)


@pytest.mark.parametrize("builder", ["swin_t", "swin_v2_t"])
def test_a_small_swins_peak_memory_is_measured_exactly(builder):
    torch = pytest.importorskip("torch")
    from archcompiler.measure.memory import measure_peak_activation_bytes

    spec = archcompiler.load_spec(builder, overrides=SMALL)
    model = archcompiler.build(spec, seed=0)
    for batch in (1, 3):
        assert archcompiler.analyze(spec, batch=batch)["peak_activation_bytes"] == \
            measure_peak_activation_bytes(model, torch.randn(batch, 3, 64, 64))


def test_swin_v2s_claims_are_the_authors_numbers_at_their_training_size():
    """The authors counted SwinV2's FLOPs at 256x256 (`claims: {input: ...}`): check compares there,
    while the builders keep torchvision's default 224x224 input."""
    for builder in ("swin_v2_t", "swin_v2_s", "swin_v2_b"):
        assert archcompiler.load_spec(builder).input == (3, 224, 224)
        assert archcompiler.check(builder) == []
    found = archcompiler.check("swin_v2_t", overrides=["claims.ops=[5.0G, 11.5G, 20.3G]"])
    assert [d.message for d in found] == ["ops: the paper says 5.0G (5,000,000,000 multiply-adds), the spec "
                                         "computes at 3x256x256 5,939,690,496 (5.94G), 18.8% off"]
