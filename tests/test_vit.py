"""ViT (specs/vit.yaml, the paper's Table 1; specs/vit-tiny.yaml) as a user works with it: the variants
are Table 1's rows, the patch and the image size change the sequence and the position embedding, the
paper's parameter counts are the network's claims; diff, --optimize, ONNX, latency, `archc flops`
without torch, and training a tiny ViT on the digits. Keys, parameters, FLOPs and vit_b_32's logits
against torchvision are tests/test_zoo.py's (tests/data/torchvision_vit.json)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, meta_layout

import archcompiler
from archcompiler import TrainOptions

TABLE_1 = {"B": (12, 768, 3072, 12), "L": (24, 1024, 4096, 16), "H": (32, 1280, 5120, 16)}
BUILDERS = {"vit_b_16": ("B", 16), "vit_b_32": ("B", 32), "vit_l_16": ("L", 16), "vit_l_32": ("L", 32),
            "vit_h_14": ("H", 14)}


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_each_builder_is_its_table_1_row_and_patch(builder):
    size, patch = BUILDERS[builder]
    p = archcompiler.load_spec(builder).params
    assert (p["size"], p["patch"]) == (size, patch)
    assert (p["depth"], p["dim"], p["mlp"], p["heads"]) == TABLE_1[size]


def test_the_papers_parameter_counts_are_the_network_claims_and_hold():
    assert archcompiler.load_spec("vit_b_16").claims.params == "86M"
    assert archcompiler.load_spec("vit_l_16").claims.params == "307M"
    assert archcompiler.load_spec("vit_h_14").claims.params == "632M"
    for builder in ("vit_b_16", "vit_l_32"):
        assert archcompiler.check(builder) == []


def test_the_patch_and_the_image_size_set_the_position_embeddings_length():
    pytest.importorskip("torch")
    for overrides, tokens in ([[], 197], [["patch=32"], 50], [["input=[3,384,384]"], 577],
                              [["patch=32", "input=[3,384,384]"], 145]):
        keys = dict((k, s) for k, s in meta_layout("vit_b_16", overrides)[0])
        assert keys["encoder.pos_embedding"] == [1, tokens, 768], overrides
        patch = 32 if "patch=32" in overrides else 16
        assert keys["conv_proj.weight"] == [768, 3, patch, patch]


def test_depth_heads_and_width_are_set_like_any_parameter():
    pytest.importorskip("torch")
    keys, params = meta_layout("vit_b_16", ["depth=2", "heads=8", "dim=256", "mlp=512", "num_classes=10"])
    assert sum(1 for k, _ in keys if k.endswith("self_attention.in_proj_weight")) == 2
    assert dict(keys)["encoder.layers.encoder_layer_1.self_attention.in_proj_weight"] == [768, 256]
    assert archcompiler.analyze("vit_b_16", overrides=["depth=2", "heads=8", "dim=256", "mlp=512",
                                                       "num_classes=10"])["total"]["params"] == params


def test_diff_of_vit_b_16_and_vit_b_32_reads_as_the_patch():
    result = archcompiler.diff("vit_b_16", "vit_b_32")
    text = str(result)
    assert "patch" in text and "16" in text and "32" in text


def test_flops_of_vit_h_14_never_imports_torch():
    code = ("import sys\nfrom archcompiler.cli import main\nassert main(['flops', 'vit_h_14']) == 0\n"
            "assert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "632,045,800 params" in done.stdout and "257x1280" in done.stdout


def test_latency_times_attention_and_the_mlp_as_their_own_kernel_classes():
    from archcompiler.ir import OPS
    from archcompiler.passes import annotated_graph

    g = annotated_graph(archcompiler.load_spec("vit_b_16"))
    kinds = {}
    for n, d in g.nodes(data=True):
        ins = [g.nodes[p]["shape"] for p in d["inputs"]]
        kinds[n] = OPS[d["op"]].latency.kernel(d["attrs"], ins, d["shape"]).kind
    assert kinds["layers/0/self_attention"] == "attention" and kinds["layers/0/mlp_1"] == "matmul"
    assert kinds["head"] == "linear"
    from archcompiler.passes.machine import load_profile, shipped_profile_path

    profile = load_profile(shipped_profile_path())     # calibrated before these classes: timed like linear
    rows = {r["name"]: r for r in archcompiler.analyze("vit_b_16", latency=profile)["rows"]}
    assert rows["layers"]["predicted_ms"] > 0 and rows["layers"]["bound"] == "compute"


def test_optimize_gives_the_same_output():
    torch = pytest.importorskip("torch")
    model = archcompiler.build("vit-tiny", seed=0).eval()
    fast = archcompiler.build("vit-tiny", weights=model.state_dict(), optimize=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected, got = model(x), fast(x)
    assert (got - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


@pytest.mark.slow
def test_onnx_export_matches_torch(tmp_path):
    import numpy as np
    onnxruntime = pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    from conftest import run_archc

    out = tmp_path / "vit.onnx"
    result = run_archc("build", "specs/vit-tiny.yaml", "--emit", "onnx", "-o", str(out), "-q", "--seed", "3")
    assert result.returncode == 0, result.stderr
    model = archcompiler.build("vit-tiny", seed=3).eval()
    x = torch.randn(1, 3, 32, 32)
    (y,) = onnxruntime.InferenceSession(str(out)).run(None, {"image": x.numpy()})
    with torch.no_grad():
        assert np.abs(y - model(x).numpy()).max() < 1e-4


@pytest.mark.slow
def test_a_tiny_vit_learns_the_digits_on_a_cpu(tmp_path):
    pytest.importorskip("torch")
    from archcompiler.training.digits import write_digits

    write_digits(tmp_path / "digits")
    options = TrainOptions(epochs=3, workers=0, out=tmp_path / "run", progress=False, seed=0)
    result = archcompiler.train("vit-tiny", tmp_path / "digits", options, overrides=["num_classes=2"])
    assert max(h["val_accuracy"] for h in result.history) >= 0.9, result.history
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.slow
def test_torchscript_export_matches_torch(tmp_path):
    """Traced without autograd: nn.MultiheadAttention's fused path, the same in the trace and its check."""
    torch = pytest.importorskip("torch")
    from conftest import run_archc

    out = tmp_path / "vit.ts"
    result = run_archc("build", "specs/vit-tiny.yaml", "--emit", "torchscript", "-o", str(out), "-q", "--seed", "3")
    assert result.returncode == 0, result.stderr
    model = archcompiler.build("vit-tiny", seed=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (torch.jit.load(str(out))(x) - model(x)).abs().max().item() < 1e-5
