"""Sequences of tokens beside images and flat vectors: their shape rules (patch embedding, class
token, position embedding, LayerNorm and Linear over tokens, self-attention, selecting a token), how
they are printed (``197x768``, as ViT's paper prints them), the errors for a sequence fed to an image
op and back, attention's cost against torch's FlopCounterMode and its memory against a measurement."""

from __future__ import annotations

import pytest
from conftest import assert_memory_measured

import archcompiler
from archcompiler import GraphError
from archcompiler.ir import OPS
from archcompiler.ops import ShapeError
from archcompiler.util import shape_text

TOKENS = ("name: t\ninput: [3, 16, 16]\nlayers:\n  - {name: p, op: patch_embed, out: 8, patch: 4}\n")


def _errors(text: str) -> list[str]:
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(text)
    return [e.message for e in info.value.errors]


# ----------------------------------------------------------------------------- shape rules

def test_the_shape_rules_of_the_token_ops():
    assert OPS["patch_embed"].shape({"out_channels": 768, "patch": 16, "bias": True}, [(3, 224, 224)]) == (196, 768)
    assert OPS["patch_embed"].shape({"out_channels": 768, "patch": 32, "bias": True}, [(3, 384, 384)]) == (144, 768)
    assert OPS["class_token"].shape({}, [(196, 768)]) == (197, 768)
    assert OPS["pos_embedding"].shape({}, [(197, 768)]) == (197, 768)
    assert OPS["pos_embedding"].params({}, [(197, 768)], (197, 768)).total == 197 * 768
    assert OPS["self_attention"].shape({"heads": 12, "dropout": 0.0}, [(197, 768)]) == (197, 768)
    assert OPS["linear"].shape({"out_features": 3072, "bias": True}, [(197, 768)]) == (197, 3072)
    assert OPS["linear"].shape({"out_features": 10, "bias": True}, [(768,)]) == (10,)
    assert OPS["layer_norm2d"].shape({"eps": 1e-6}, [(197, 768)]) == (197, 768)
    assert OPS["layer_norm2d"].params({"eps": 1e-6}, [(197, 768)], (197, 768)).total == 2 * 768
    assert OPS["layer_norm2d"].params({"eps": 1e-6}, [(96, 56, 56)], (96, 56, 56)).total == 2 * 96   # ConvNeXt's
    assert OPS["select_token"].shape({"index": 0}, [(197, 768)]) == (768,)


def test_attention_counts_its_projections_and_both_products():
    """4 S D^2 for q, k, v and the output projection, S^2 D for QK^T and S^2 D for the scores times V."""
    s, d = 197, 768
    macs = OPS["self_attention"].macs({"heads": 12, "dropout": 0.0}, [(s, d)], (s, d))
    assert macs == 4 * s * d * d + 2 * s * s * d
    assert OPS["self_attention"].params({"heads": 12}, [(s, d)], (s, d)).total == 4 * d * d + 4 * d


def test_a_sequence_prints_as_tokens_x_dim():
    assert shape_text((197, 768)) == "197x768"
    report = archcompiler.analyze("vit_b_16")
    outputs = {r["name"]: r["output"] for r in report["rows"]}
    assert outputs["conv_proj"] == [196, 768] and outputs["layers"] == [197, 768] and outputs["cls"] == [768]
    assert [s["resolution"] for s in report["stages"]] == ["196 tokens", "197 tokens", "flat"]


def test_the_flops_table_and_the_generated_code_show_tokens(capsys, tmp_path):
    from archcompiler.cli import main

    assert main(["flops", "vit_b_16"]) == 0
    table = capsys.readouterr().out
    assert "196x768" in table and "197x768" in table and "16x16/16" in table
    assert "QK^T and AV" in table                 # the convention says what attention's count holds
    out = tmp_path / "vit.py"
    assert main(["build", "specs/vit-tiny.yaml", "--emit", "python", "-o", str(out)]) == 0
    source = out.read_text()
    assert "flatten(2).transpose(1, 2)  # N x 64 x 64" in source
    assert "need_weights=False)[0]  # N x 65 x 64" in source


def test_attention_sees_the_whole_image():
    report = archcompiler.analyze(TOKENS + "  - {name: a, op: self_attention, heads: 2}\n")
    assert report["receptive_field"]["size"] == [16, 16]
    report = archcompiler.analyze(TOKENS + "  - {name: n, op: layer_norm}\n")
    assert report["receptive_field"]["size"] == [4, 4]          # one patch


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("layer", ["{name: c, op: conv, out: 8, kernel: 1}", "{name: c, op: max_pool, kernel: 2}",
                                   "{name: c, op: lrn, size: 3}", "{name: c, op: global_avg_pool}",
                                   "{name: c, op: linear, over: channels, out: 4}"])
def test_a_sequence_fed_to_an_image_op_names_both_shapes(layer):
    (message,) = _errors(TOKENS + f"  - {layer}\n")
    assert "needs an image (H x W x C)" in message and "a sequence 16x8 (tokens x dim)" in message


@pytest.mark.parametrize("layer", ["{name: a, op: self_attention, heads: 2}", "{name: a, op: class_token}",
                                   "{name: a, op: pos_embedding}", "{name: a, op: select_token}",
                                   "{name: a, op: patch_embed, out: 4, patch: 2}"])
def test_an_image_op_and_a_token_op_refuse_the_wrong_input(layer):
    text = "name: t\ninput: [3, 16, 16]\nlayers:\n  - {name: c, op: conv, out: 8, kernel: 1}\n  - {name: f, op: flatten}\n"
    (message,) = _errors(text + f"  - {layer}\n")
    assert "1x1x2048" in message
    if "patch_embed" not in layer:
        assert "needs a sequence (tokens x dim) input, got a flat 1x1x2048" in message
        (message,) = _errors(text.replace("  - {name: f, op: flatten}\n", "") + f"  - {layer}\n")
        assert "needs a sequence (tokens x dim) input, got an image 16x16x8" in message


def test_heads_that_do_not_divide_the_dimension_name_both_numbers():
    (message,) = _errors(TOKENS + "  - {name: a, op: self_attention, heads: 3}\n")
    assert "heads=3 does not divide the dimension 8" in message
    with pytest.raises(ShapeError):
        OPS["self_attention"].shape({"heads": 5}, [(197, 768)])


def test_a_patch_that_does_not_tile_the_image_and_a_token_beyond_the_sequence():
    (message,) = _errors(TOKENS.replace("[3, 16, 16]", "[3, 18, 16]"))
    assert "patch 4x4 does not tile the image 18x16x3" in message
    (message,) = _errors(TOKENS + "  - {name: s, op: select_token, index: 16}\n")
    assert "token 16 is not within the sequence 16x8 of 16 tokens" in message


# ----------------------------------------------------------------------------- FLOPs and memory against torch

def test_attentions_flops_are_what_the_counter_sees_with_autograd_and_the_math_backend():
    """The README's convention: archc counts QK^T and AV. FlopCounterMode sees them with autograd on and
    the math backend; on the default CPU path it sees the projections only (torchvision_zoo.json's
    ``flops``), and under no_grad in evaluation nn.MultiheadAttention's fused path hides it all."""
    torch = pytest.importorskip("torch")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    spec = archcompiler.load_spec("vit-tiny", overrides=["depth=2"])
    flops = archcompiler.analyze(spec)["total"]["flops"]
    model = archcompiler.build(spec, seed=0).eval()
    x = torch.randn(1, *spec.input)
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as math_path:
        model(x)
    with torch.enable_grad(), FlopCounterMode(display=False) as default_path:
        model(x)
    with torch.no_grad(), FlopCounterMode(display=False) as fused:
        model(x)
    s, d, layers = 65, 64, 2
    assert math_path.get_total_flops() == flops
    assert default_path.get_total_flops() + layers * 4 * s * s * d == flops
    assert fused.get_total_flops() < default_path.get_total_flops()


@pytest.mark.parametrize("overrides", [["depth=2"], ["depth=2", "heads=2", "patch=8"]],
                         ids=["vit-tiny", "2-heads-patch-8"])
def test_memory_matches_a_measurement(overrides):
    """Inference peak exactly (the fused attention path keeps no S x S scores); a training step within 1%
    (attention keeps its input, q, k, v, its output and a log-sum-exp per head and token)."""
    pytest.importorskip("torch")
    assert_memory_measured(archcompiler.load_spec("vit-tiny", overrides=overrides), infer_batch=2, optimizer="adam")


def test_the_token_ops_are_drawn():
    from archcompiler.backends.dot import build_dot

    pytest.importorskip("graphviz")
    dot = build_dot(archcompiler.load_spec(TOKENS + "  - {name: c, op: class_token}\n  - {name: e, op: pos_embedding}\n"
                                           "  - {name: a, op: self_attention, heads: 2}\n"
                                           "  - {name: s, op: select_token}\n")).source
    assert "8 per patch" in dot and "2 heads" in dot and "token 0" in dot and "17x8" in dot
