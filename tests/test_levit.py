"""timm's LeViT (issue #32): batch norm over a sequence's tokens (``batch_norm`` on S x D, LeViT's ``LinearNorm``
and ``NormLinear``) and LeViT's attention (``levit_attention``: a bias per head and offset, each projection a
Linear and a BatchNorm over the tokens, an activation before proj, and the subsampling attention whose queries
are every other position of the grid).

timm is no dependency: the reference is a hand-written copy of timm's LeViT parts (the same attributes, buffers
and forward; the attention classes claim timm's module path, as the importer reads them by package) in a small
model written the way timm's LevitDistilled writes its own. timm's models are measured in a side environment
(benchmarks/import_timm.py: levit_128s, levit_128, levit_192, levit_256)."""

from __future__ import annotations

import inspect
import sys

import pytest
from conftest import assert_memory_measured, run_archc, trained_like

import archcompiler
from archcompiler import BackendError, GraphError

torch = pytest.importorskip("torch")
nn = torch.nn

# ----------------------------------------------------------------------------- timm's modules, by hand (MODULE)


class ConvNorm(nn.Module):
    def __init__(self, i, o, k=1, stride=1, padding=0):
        super().__init__()
        self.linear = nn.Conv2d(i, o, k, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(o)

    def forward(self, x):
        return self.bn(self.linear(x))


class LinearNorm(nn.Module):
    """timm.models.levit.LinearNorm: a Linear without bias and a BatchNorm1d over the N x S tokens as one batch."""

    def __init__(self, i, o):
        super().__init__()
        self.linear = nn.Linear(i, o, bias=False)
        self.bn = nn.BatchNorm1d(o)

    def forward(self, x):
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


class NormLinear(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.bn = nn.BatchNorm1d(i)
        self.drop = nn.Dropout(0.0)
        self.linear = nn.Linear(i, o)

    def forward(self, x):
        return self.linear(self.drop(self.bn(x)))


def bias_index(r, stride):
    """timm's attention_bias_idxs: queries every stride-th row and column, keys every position."""
    k = torch.stack(torch.meshgrid(torch.arange(r), torch.arange(r), indexing="ij")).flatten(1)
    q = torch.stack(torch.meshgrid(torch.arange(0, r, stride), torch.arange(0, r, stride), indexing="ij")).flatten(1)
    rel = (q[..., :, None] - k[..., None, :]).abs()
    return rel[0] * r + rel[1]


class Attention(nn.Module):
    """timm.models.levit.Attention (timm 1.0): the same attributes and buffers, the same forward (on tokens, or
    with use_conv on a map)."""

    def __init__(self, dim, key_dim, num_heads, attn_ratio, resolution, act_layer=nn.Hardswish, use_conv=False):
        super().__init__()
        ln_layer = ConvNorm if use_conv else LinearNorm
        self.use_conv = use_conv
        self.num_heads = num_heads
        self.scale = key_dim ** -0.5
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.val_attn_dim = self.val_dim * num_heads
        self.resolution = (resolution, resolution)
        self.qkv = ln_layer(dim, self.val_attn_dim + key_dim * num_heads * 2)
        self.proj = nn.Sequential()
        self.proj.add_module("act", act_layer())
        self.proj.add_module("ln", ln_layer(self.val_attn_dim, dim))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution ** 2))
        self.register_buffer("attention_bias_idxs", bias_index(resolution, 1), persistent=False)

    def forward(self, x):
        if self.use_conv:
            B, C, H, W = x.shape
            q, k, v = self.qkv(x).view(B, self.num_heads, -1, H * W).split([self.key_dim, self.key_dim,
                                                                              self.val_dim], dim=2)
            attn = (q.transpose(-2, -1) @ k) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
            attn = attn.softmax(dim=-1)
            x = (v @ attn.transpose(-2, -1)).view(B, -1, H, W)
            return self.proj(x)
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, self.num_heads, -1).split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        q = q.permute(0, 2, 1, 3)
        k = k.permute(0, 2, 3, 1)
        v = v.permute(0, 2, 1, 3)
        attn = q @ k * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, self.val_attn_dim)
        return self.proj(x)


class Subsample(nn.Module):
    def __init__(self, stride, resolution):
        super().__init__()
        self.stride, self.resolution, self.pool = stride, (resolution, resolution), None

    def forward(self, x):
        B, N, C = x.shape
        x = x.view(B, self.resolution[0], self.resolution[1], C)[:, ::self.stride, ::self.stride]
        return x.reshape(B, -1, C)


class AttentionDownsample(nn.Module):
    """timm.models.levit.AttentionDownsample (use_pool False; with use_conv on a map, the queries' map an
    average pool of one pixel)."""

    def __init__(self, in_dim, out_dim, key_dim, num_heads, attn_ratio, resolution, stride=2, use_conv=False):
        super().__init__()
        ln_layer = ConvNorm if use_conv else LinearNorm
        self.use_conv = use_conv
        self.stride, self.resolution, self.num_heads = stride, (resolution, resolution), num_heads
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.val_attn_dim = self.val_dim * num_heads
        self.scale = key_dim ** -0.5
        self.kv = ln_layer(in_dim, self.val_attn_dim + key_dim * num_heads)
        self.q = nn.Sequential()
        self.q.add_module("down", nn.AvgPool2d(1, stride, 0, count_include_pad=False) if use_conv
                          else Subsample(stride, resolution))
        self.q.add_module("ln", ln_layer(in_dim, key_dim * num_heads))
        self.proj = nn.Sequential()
        self.proj.add_module("act", nn.Hardswish())
        self.proj.add_module("ln", ln_layer(self.val_attn_dim, out_dim))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution ** 2))
        self.register_buffer("attention_bias_idxs", bias_index(resolution, stride), persistent=False)

    def forward(self, x):
        if self.use_conv:
            B, C, H, W = x.shape
            HH, WW = (H - 1) // self.stride + 1, (W - 1) // self.stride + 1
            k, v = self.kv(x).view(B, self.num_heads, -1, H * W).split([self.key_dim, self.val_dim], dim=2)
            q = self.q(x).view(B, self.num_heads, self.key_dim, -1)
            attn = (q.transpose(-2, -1) @ k) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
            attn = attn.softmax(dim=-1)
            x = (v @ attn.transpose(-2, -1)).reshape(B, self.val_attn_dim, HH, WW)
            return self.proj(x)
        B, N, C = x.shape
        k, v = self.kv(x).view(B, N, self.num_heads, -1).split([self.key_dim, self.val_dim], dim=3)
        k = k.permute(0, 2, 3, 1)
        v = v.permute(0, 2, 1, 3)
        q = self.q(x).view(B, -1, self.num_heads, self.key_dim).permute(0, 2, 1, 3)
        attn = q @ k * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, -1, self.val_attn_dim)
        return self.proj(x)


Attention.__module__ = AttentionDownsample.__module__ = "timm.models.levit"     # leaves of the trace, by package


class LevitMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.ln1 = LinearNorm(dim, hidden)
        self.act = nn.Hardswish()
        self.drop = nn.Dropout(0.0)
        self.ln2 = LinearNorm(hidden, dim)

    def forward(self, x):
        return self.ln2(self.drop(self.act(self.ln1(x))))


class LevitBlock(nn.Module):
    def __init__(self, dim, key_dim, heads, resolution):
        super().__init__()
        self.attn = Attention(dim, key_dim, heads, 2.0, resolution)
        self.drop_path1 = nn.Identity()
        self.mlp = LevitMlp(dim, 2 * dim)
        self.drop_path2 = nn.Identity()

    def forward(self, x):
        x = x + self.drop_path1(self.attn(x))
        return x + self.drop_path2(self.mlp(x))


class LevitDownsample(nn.Module):
    def __init__(self, in_dim, out_dim, key_dim, resolution):
        super().__init__()
        self.attn_downsample = AttentionDownsample(in_dim, out_dim, key_dim, in_dim // key_dim, 4.0, resolution)
        self.mlp = LevitMlp(out_dim, 2 * out_dim)

    def forward(self, x):
        x = self.attn_downsample(x)
        return x + self.mlp(x)


class Levit(nn.Module):
    """timm's LevitDistilled, small: a ConvNorm stem with Hardswish (stride 4 here), tokens, two blocks on the
    4 x 4 grid, the subsampling attention to 2 x 2 and a block there, the token mean and the two NormLinear
    heads averaged (evaluation)."""

    INPUT_SHAPE = (3, 16, 16)

    def __init__(self, classes=5):
        super().__init__()
        self.stem = nn.Sequential()
        self.stem.add_module("conv1", ConvNorm(3, 8, 3, stride=2, padding=1))
        self.stem.add_module("act1", nn.Hardswish())
        self.stem.add_module("conv2", ConvNorm(8, 16, 3, stride=2, padding=1))
        self.stages = nn.Sequential(nn.Sequential(LevitBlock(16, 4, 2, 4), LevitBlock(16, 4, 2, 4)),
                                    nn.Sequential(LevitDownsample(16, 24, 4, 4), LevitBlock(24, 4, 3, 2)))
        self.head = NormLinear(24, classes)
        self.head_dist = NormLinear(24, classes)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = self.stages(x).mean(1)
        return (self.head(x) + self.head_dist(x)) / 2


def levit() -> Levit:
    """The callable `archc import` runs: seeded, trained-like (the bias tables far from zero)."""
    torch.manual_seed(0)
    model = trained_like(Levit())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("attention_biases"):
                p.normal_(0, 1)
    return model


# ----------------------------------------------------------------------------- end of MODULE

MARK = "# " + "-" * 77


def _module_file(tmp_path):
    source = inspect.getsource(sys.modules[__name__])
    module = source.split(MARK + " timm's modules, by hand (MODULE)", 1)[1].split(MARK, 1)[0]
    (tmp_path / "levitlike.py").write_text("import torch\nfrom torch import nn\nfrom conftest import trained_like\n"
                                           + module)
    return {"PYTHONPATH": str(inspect.getfile(trained_like)).rpartition("/")[0]}


def test_the_model_imports_exactly_through_the_command(tmp_path):
    """`archc import` in a fresh process: verified by archc, and again here (built from the written file, the
    module's state_dict loaded strictly, the same logits). The attention and MLP are blocks, the LinearNorms a
    linear over the tokens and a batch_norm, the heads' batch norms over the flat token mean."""
    done = run_archc("import", "levitlike.py:levit", "-o", "net.yaml", cwd=tmp_path, env=_module_file(tmp_path))
    assert done.returncode == 0 and "verified: the spec's outputs equal the source's" in done.stderr, done.stderr
    text = (tmp_path / "net.yaml").read_text()
    for line in ("{name: attn, op: levit_attention, heads: heads, key_dim: 4, value_dim: 8}",
                 "op: levit_attention, heads: 4, key_dim: 4, value_dim: 16, stride: 2, out: 24}",
                 "{name: mlp.ln1.linear, op: linear, out: \"heads * 16\", bias: false, over: tokens}",
                 "{name: mlp.ln1.bn, op: batch_norm}", "{name: head.bn, op: batch_norm}", "op: affine, scale: 0.5"):
        assert line in text, text
    model = levit()
    built = archcompiler.build(archcompiler.load_spec(tmp_path / "net.yaml")).eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(built(x), model(x), rtol=1e-5, atol=1e-5)


def _spec(attn: str, side: int = 4, dim: int = 16, on_map: bool = False) -> str:
    """A stem to an R x R grid, the attention on its tokens (on its map), the mean and a head."""
    return (f"name: lv\ninput: [3, {4 * side}, {4 * side}]\nlayers:\n"
            f"  - {{name: stem, op: conv, out: {dim}, kernel: 4, stride: 4}}\n"
            + ("" if on_map else "  - {name: tokens, op: to_tokens}\n")
            + f"  - {attn}\n"
            + ("  - {name: pool, op: global_avg_pool}\n" if on_map else "  - {name: pool, op: token_mean}\n")
            + "  - {name: head, op: linear, out: 3}\n")


ATTN = "{name: attn, op: levit_attention, heads: 2, key_dim: 4, value_dim: 8}"
DOWN = "{name: attn, op: levit_attention, heads: 4, key_dim: 4, value_dim: 16, stride: 2, out: 24}"


@pytest.mark.parametrize("attn, reference, side", [
    (ATTN, lambda: Attention(16, 4, 2, 2.0, 4), 4),
    (DOWN, lambda: AttentionDownsample(16, 24, 4, 4, 4.0, 5), 5),
    (ATTN.replace("}", ", act: silu}"), lambda: Attention(16, 4, 2, 2.0, 4, act_layer=nn.SiLU, use_conv=True), -4),
    (DOWN, lambda: AttentionDownsample(16, 24, 4, 4, 4.0, 5, use_conv=True), -5),
], ids=["attention", "subsampling", "map-silu", "map-subsampling"])
def test_levit_attention_is_timms_keys_output_params_and_flops(attn, reference, side):
    """Built, the layer has the reference's state_dict keys, loads its weights and gives its output, in
    evaluation and in training (the batch's statistics); its parameters are the reference's, its buffers the
    BatchNorms' (the bias index is not saved), and the network's FLOPs what FlopCounterMode counts. A negative
    side: the attention on the stem's map (timm's use_conv)."""
    from torch.utils.flop_counter import FlopCounterMode

    on_map, side = side < 0, abs(side)
    spec = archcompiler.load_spec(_spec(attn, side, on_map=on_map))
    built = archcompiler.build(spec, seed=0)
    ref = trained_like(reference())
    with torch.no_grad():
        ref.attention_biases.normal_(0, 1)
    layer = built.get_submodule("attn")
    assert list(layer.state_dict()) == list(ref.state_dict())
    layer.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, *((16, side, side) if on_map else (side * side, 16)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(layer.eval()(x), ref.eval()(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.train()(x), ref.train()(x), rtol=1e-5, atol=1e-5)
    report = archcompiler.analyze(spec)
    row = next(r for r in report["rows"] if r["name"] == "attn")
    r, dim = ((side - 1) // 2 + 1, 24) if "stride" in attn else (side, 16)
    assert tuple(row["output"]) == ((dim, r, r) if on_map else (r * r, dim))
    assert row["params"] == sum(p.numel() for p in ref.parameters())
    assert row["buffers"] == sum(b.numel() for b in ref.state_dict().values()) - row["params"]
    with torch.no_grad(), FlopCounterMode(display=False) as counted:
        built.eval()(torch.randn(1, *spec.input))
    assert counted.get_total_flops() == report["total"]["flops"]


def test_batch_norm_over_tokens_and_a_flat_vector_is_batch_norm1d():
    """batch_norm on a sequence normalises each token's features over the batch's tokens (nn.BatchNorm1d on the
    N S x D tokens), on a flat vector its features: the same output as LinearNorm and NormLinear in training
    and evaluation, and the same parameters and buffers."""
    text = ("name: bn\ninput: [3, 8, 8]\nlayers:\n  - {name: stem, op: conv, out: 6, kernel: 2, stride: 2}\n"
            "  - {name: tokens, op: to_tokens}\n  - {name: ln.linear, op: linear, out: 10, bias: false, over: tokens}\n"
            "  - {name: ln.bn, op: batch_norm, eps: 0.001}\n  - {name: pool, op: token_mean}\n"
            "  - {name: head.bn, op: batch_norm}\n  - {name: head.linear, op: linear, out: 3}\n")
    spec = archcompiler.load_spec(text)
    built = archcompiler.build(spec, seed=0)
    ln, head = trained_like(LinearNorm(6, 10)), trained_like(NormLinear(10, 3))
    ln.bn.eps = 1e-3
    built.ln.load_state_dict(ln.state_dict(), strict=True)
    built.head.load_state_dict(head.state_dict(), strict=True)
    assert isinstance(built.ln.bn, nn.BatchNorm1d) and built.ln.bn.eps == 1e-3
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for mode in (False, True):
        for m in (built, ln, head):
            m.train(mode)
        with torch.no_grad():
            tokens = built.stem(x).flatten(2).transpose(1, 2)
            torch.testing.assert_close(built(x), head(ln(tokens).mean(1)), rtol=1e-5, atol=1e-5)
    rows = {r["name"]: r for r in archcompiler.analyze(spec)["rows"]}
    assert tuple(rows["ln.bn"]["output"]) == (16, 10) and tuple(rows["head.bn"]["output"]) == (10,)
    assert (rows["ln.bn"]["params"], rows["ln.bn"]["buffers"]) == (20, 21)
    assert (rows["head.bn"]["params"], rows["head.bn"]["buffers"]) == (20, 21)


MEMORY_BN = ("name: bnm\ninput: [3, 16, 16]\nlayers:\n  - {name: stem, op: conv, out: 8, kernel: 2, stride: 2}\n"
             "  - {name: tokens, op: to_tokens}\n  - {name: l, op: linear, out: 32, bias: false, over: tokens}\n"
             "  - {name: bn, op: batch_norm}\n  - {name: act, op: hardswish}\n  - {name: pool, op: token_mean}\n"
             "  - {name: bn2, op: batch_norm}\n  - {name: fc, op: linear, out: 2}\n")


@pytest.mark.parametrize("text", [_spec(ATTN, 8), _spec(DOWN, 8), _spec(DOWN, 8, on_map=True), MEMORY_BN],
                         ids=["attention", "subsampling", "map-subsampling", "batch_norm"])
def test_memory_is_measured(text):
    """The inference peak exactly (on a sequence at a batch of one the products read views of the projections,
    over one they copy q, k and v; on a map views), a training step within 1% (a batch of 8: the layer's
    parameters' gradients, which the memory pass counts when its backward starts and torch makes as it goes,
    are a fixed excess)."""
    assert_memory_measured(text, infer_batch=1, train_batch=None)
    assert_memory_measured(text)


class LevitConv(nn.Module):
    """timm's levit_conv_*, small: the stem's map, the attention, the MLP (1 x 1 ConvNorms) and the subsampling
    attention on the map, the mean over H and W and the NormLinear head."""

    INPUT_SHAPE = (3, 16, 16)

    def __init__(self):
        super().__init__()
        self.stem = ConvNorm(3, 16, 4, stride=4)
        self.attn = Attention(16, 4, 2, 2.0, 4, use_conv=True)
        self.ln1, self.act, self.ln2 = ConvNorm(16, 32), nn.Hardswish(), ConvNorm(32, 16)
        self.down = AttentionDownsample(16, 24, 4, 4, 4.0, 4, use_conv=True)
        self.head = NormLinear(24, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.attn(x)
        x = x + self.ln2(self.act(self.ln1(x)))
        return self.head(self.down(x).mean(dim=(-2, -1)))


def test_the_conv_variant_imports_exactly():
    """timm's use_conv models: the attention on the map is levit_attention on a map, the ConvNorms convs with
    a norm; verified by the import, and the written spec loads the module's state_dict and gives its logits."""
    from conftest import assert_imports_back

    torch.manual_seed(0)
    model = trained_like(LevitConv())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("attention_biases"):
                p.normal_(0, 1)
    text = archcompiler.import_module(model, name="levit_conv")
    assert "{name: attn, op: levit_attention, heads: 2, key_dim: 4, value_dim: 8}" in text
    assert "{name: down, op: levit_attention, heads: 4, key_dim: 4, value_dim: 16, stride: 2, out: 24}" in text
    assert_imports_back(model, text)


@pytest.mark.parametrize("on_map", [False, True], ids=["tokens", "map"])
def test_archcs_own_module_imports_back(on_map):
    """A built spec's LevitAttention (its subsampled queries sliced, with no module) and batch norm over the
    tokens are read back as the same layers."""
    from conftest import assert_imports_back

    text = _spec(DOWN, 5, on_map=on_map)
    if not on_map:
        text = text.replace("  - {name: pool", "  - {name: l, op: linear, out: 8, bias: false, over: tokens}\n"
                                               "  - {name: bn, op: batch_norm}\n  - {name: pool")
    model = trained_like(archcompiler.build(text, seed=0))
    back = archcompiler.import_module(model, name="back")
    assert "{name: attn, op: levit_attention, heads: 4, key_dim: 4, value_dim: 16, stride: 2, out: 24}" in back
    assert on_map or "{name: bn, op: batch_norm}" in back
    assert_imports_back(model, back)


def test_a_grid_that_is_no_square_is_refused_at_the_layer():
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(_spec(ATTN).replace("input: [3, 16, 16]", "input: [3, 16, 12]"))
    assert "attn" in str(info.value) and "12 tokens, no square" in str(info.value)


def test_what_the_op_cannot_hold_is_refused_saying_why():
    """A LinearNorm whose Linear has a bias, queries subsampled by a pool, an activation archc's op does not
    build, and a BatchNorm1d over the channels of N x C x L: each refused in one line at its module."""
    def refused(model, words):
        with pytest.raises(BackendError) as info:
            archcompiler.import_module(model, name="odd")
        message = info.value.errors[0].format()
        assert all(w in message for w in words), message

    model = levit()
    model.stages[0][0].attn.qkv.linear = nn.Linear(16, 32)
    refused(model, ("stages.0.0.attn (Attention)", "LinearNorm"))
    model = levit()
    model.stages[1][0].attn_downsample.q.down.pool = nn.AvgPool2d(3, 2, 1)
    refused(model, ("attn_downsample (AttentionDownsample)", "subsampled by a pool"))
    model = levit()
    model.stages[0][1].attn.proj.act = nn.Tanh()
    refused(model, ("stages.0.1.attn (Attention)", "Tanh"))

    class Channels(nn.Module):
        """BatchNorm1d on N x S x D reads the S tokens as its channels."""

        INPUT_SHAPE = (3, 8, 8)

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 2, 2)
            self.fc = nn.Linear(4, 6)
            self.bn = nn.BatchNorm1d(16)

        def forward(self, x):
            return self.bn(self.fc(self.conv(x).flatten(2).transpose(1, 2)))

    refused(Channels(), ("bn (BatchNorm1d)", "over the channels"))
