"""The torch backend: built modules agree with the analysis, train, round-trip, and load
torchvision's weights."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import ALL_SPECS, ROOT, SPECS, TIERED_SPECS, TORCHVISION_SPECS, recipe_input, recipe_weights, run_archc
from torch.utils.flop_counter import FlopCounterMode

import archcompiler
from archcompiler import BackendError

HEADED = [s for s in ALL_SPECS if s.name.startswith("googlenet") and s.stem != "googlenet-keras"]   # (aux heads)
SMALL = SPECS / "googlenet-small.yaml"


def small_input(spec, n: int = 2) -> torch.Tensor:
    return torch.randn(n, *spec.input)


@pytest.fixture(scope="module")
def fixture(torchvision_reference):
    """torchvision GoogLeNet's recipe weights, input and logits (tests/data)."""
    ref = torchvision_reference["googlenet"]
    return {"state_dict": recipe_weights(ref["keys"]), "input": recipe_input(), "logits": torch.tensor(ref["logits"])}


# ----------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize("net", sorted(TORCHVISION_SPECS))
def test_torchvision_keys_order_shapes_and_logits(net, torchvision_reference, tmp_path):
    """Each spec that claims torchvision's layout loads torchvision's state_dict strictly, under
    torchvision's key names and order, and gives torchvision's logits."""
    ref = torchvision_reference[net]
    model = archcompiler.build(SPECS / TORCHVISION_SPECS[net])
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == ref["keys"]
    assert sum(p.numel() for p in model.parameters()) == ref["params"]
    weights = tmp_path / "torchvision.pth"          # a checkpoint file, as torchvision publishes them
    torch.save(recipe_weights(ref["keys"]), weights)
    model = archcompiler.build(SPECS / TORCHVISION_SPECS[net], weights=weights)
    with torch.no_grad():
        logits = model.eval()(recipe_input())
    assert (logits - torch.tensor(ref["logits"])).abs().max().item() <= 1e-4


def test_checkpoint_without_aux_heads_loads_when_asked(fixture):
    state = {k: v for k, v in fixture["state_dict"].items() if not k.startswith("aux")}
    with pytest.raises(BackendError) as info:
        archcompiler.build(SPECS / "googlenet-torchvision.yaml", weights=state)
    assert any("missing key aux1.conv.conv.weight (layer aux1/conv)" in d.message for d in info.value.errors)
    model = archcompiler.build(SPECS / "googlenet-torchvision.yaml", weights=state, drop_missing=True)
    assert not any(k.startswith("aux") for k in model.state_dict())
    with torch.no_grad():
        assert torch.allclose(model.eval()(fixture["input"]), fixture["logits"], atol=1e-4)


def test_mismatched_weights_are_listed_by_layer(fixture):
    with pytest.raises(BackendError) as info:
        archcompiler.build(SPECS / "googlenet.yaml", weights=fixture["state_dict"])
    messages = [d.message for d in info.value.errors]
    assert any(m.startswith("missing key conv1.weight (layer conv1)") for m in messages)
    assert any(m.startswith("unexpected key conv1.conv.weight") for m in messages)
    assert any("shape mismatch for fc.weight" not in m for m in messages)
    located = next(d for d in info.value.errors if d.message.startswith("missing key conv1.weight"))
    assert located.file.endswith("googlenet.yaml") and located.line > 0


def test_another_class_count_starts_the_classifiers_afresh_and_other_shapes_are_errors(fixture, capsys):
    """The classifier layers (fc and the heads' fc2) start afresh; everything else loads."""
    model = archcompiler.build(SPECS / "googlenet-torchvision.yaml", {"num_classes": 10},
                               weights=fixture["state_dict"])
    lines = capsys.readouterr().err.replace("archc: ", "").splitlines()
    assert [line.split(":")[0] for line in lines] == ["new head aux1/fc2", "new head aux2/fc2", "new head fc"]
    assert "(10, 1024) in the model, (1000, 1024) in the given state_dict" in lines[-1]
    state = model.state_dict()
    assert torch.equal(state["inception5b.branch1.conv.weight"], fixture["state_dict"]["inception5b.branch1.conv.weight"])
    assert state["fc.weight"].shape == (10, 1024)
    wider = dict(fixture["state_dict"])
    wider["inception3a.branch1.conv.weight"] = torch.zeros(32, 192, 1, 1)
    with pytest.raises(BackendError) as info:
        archcompiler.build(SPECS / "googlenet-torchvision.yaml", weights=wider)
    assert info.value.errors[0].message.startswith("the given state_dict does not fit spec googlenet_torchvision: "
                                                   "the first layer that differs is inception_3a/1x1 (")
    assert any(d.message.startswith("shape mismatch for inception3a.branch1.conv.weight (layer inception_3a/1x1): "
                                    "checkpoint (32, 192, 1, 1), model (64, 192, 1, 1)")
               for d in info.value.errors)


def test_torchvision_init_is_truncated_normal():
    model = archcompiler.build(SPECS / "googlenet-torchvision.yaml", seed=0)
    w = model.inception3a.branch1.conv.weight
    assert abs(w.std().item() - 0.01) < 0.001 and w.abs().max().item() <= 2.0
    bn = model.inception3a.branch1.bn
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


# ----------------------------------------------------------------------------- every spec


@pytest.mark.parametrize("path", TIERED_SPECS, ids=lambda p: p.stem)
def test_built_module_agrees_with_the_analysis(path, built):
    spec = archcompiler.load_spec(path)
    report = archcompiler.analyze(spec)
    model = built(path).eval()
    assert sum(p.numel() for p in model.parameters()) == report["total"]["with_training_heads"]["params"]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *spec.input))
    assert counter.get_total_flops() == report["total"]["flops"]


@pytest.mark.parametrize("path", TIERED_SPECS, ids=lambda p: p.stem)
def test_every_intermediate_shape_equals_the_inferred_one(path, built):
    """Run forward under a line tracer: after every line of generated code carrying a
    '# N x C x H x W' comment (the inferred shape), the tensor it assigned has that shape."""
    spec = archcompiler.load_spec(path)
    model = built(path)
    code = model.forward.__code__
    lines = model.code.splitlines()
    expect = {}
    for number, line in enumerate(lines, start=1):
        m = re.match(r"\s+(\w+) = .*# N x ([\d x]+)$", line)
        if m:
            expect[number] = (m.group(1), tuple(int(d) for d in m.group(2).split(" x ")))
    seen: list[tuple] = []
    pending: list = []

    def tracer(frame, event, arg):
        if frame.f_code is not code:
            return None

        def local(frame, event, arg):
            if pending:
                var, shape, lineno = pending.pop()
                seen.append((lineno, var, tuple(frame.f_locals[var].shape[1:]), shape))
            if event == "line" and frame.f_lineno in expect:
                var, shape = expect[frame.f_lineno]
                pending.append((var, shape, frame.f_lineno))
            return local
        return local

    for mode in ("eval", "train"):
        getattr(model, mode)()
        sys.settrace(tracer)
        try:
            with torch.no_grad():
                model(torch.randn(2, *spec.input))
        finally:
            sys.settrace(None)
    checked = {s[0] for s in seen}
    assert checked == set(expect), "every shape comment was checked"
    assert [s for s in seen if s[2] != s[3]] == []


@pytest.mark.parametrize("path", HEADED, ids=lambda p: p.stem)
def test_a_training_step_runs(path, built):
    spec = archcompiler.load_spec(path)
    model = built(path).train()
    model.zero_grad(set_to_none=True)
    x = torch.randn(2, *spec.input)
    target = torch.tensor([0, 1])
    outputs = model(x)
    assert outputs._fields == ("main", "aux1", "aux2")
    loss = model.loss(outputs, target)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, spec.params["num_classes"])


def test_loss_weights_auxiliary_heads_by_0_3():
    model = archcompiler.build(SMALL, seed=0).train()
    outputs = model(torch.randn(3, 3, 64, 64))
    target = torch.tensor([1, 2, 3])
    expected = (F.cross_entropy(outputs.main, target) + 0.3 * F.cross_entropy(outputs.aux1, target)
                + 0.3 * F.cross_entropy(outputs.aux2, target))
    assert torch.allclose(model.loss(outputs, target), expected)


def test_two_class_binary_cross_entropy_is_stable():
    model = archcompiler.build(SPECS / "googlenet-2class.yaml", seed=0)
    assert model.LOSSES["main"] == ("binary_cross_entropy", 1.0, True)
    assert model.LOSSES["aux1"] == ("binary_cross_entropy", 0.3, True)
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.25], [-3.0, 4.0]])
    target = torch.tensor([0, 1, 1])
    naive = F.binary_cross_entropy(F.softmax(logits, 1), F.one_hot(target, 2).float())
    assert torch.allclose(model.loss(logits, target), naive, atol=1e-6)
    # the same model, but logits far beyond where softmax-then-log overflows
    extreme = torch.tensor([[200.0, -200.0], [-150.0, 150.0]])
    loss = model.loss(extreme, torch.tensor([1, 1]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(200.0, rel=1e-4)
    # softmax followed by log saturates: torch clamps log(0) to -100, so over 2 units a wrong 50
    naive = F.binary_cross_entropy(F.softmax(extreme, 1), torch.tensor([[0.0, 1.0]] * 2))
    assert naive.item() == pytest.approx(50.0)


def test_predict_proba_applies_the_final_softmax():
    model = archcompiler.build(SMALL, seed=0).train()
    p = model.predict_proba(torch.randn(4, 3, 64, 64))
    assert p.shape == (4, 10) and torch.allclose(p.sum(1), torch.ones(4)) and model.training


def test_seed_makes_initialisation_reproducible():
    a = archcompiler.build(SMALL, seed=3).state_dict()
    b = archcompiler.build(SMALL, seed=3).state_dict()
    c = archcompiler.build(SMALL, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_module_names_follow_the_spec():
    model = archcompiler.build(SPECS / "googlenet.yaml")
    keys = list(model.state_dict())
    assert keys[:2] == ["conv1.weight", "conv1.bias"]
    assert "inception_4b.n5x5_reduce.weight" in keys and "aux1.fc2.weight" in keys
    assert "def forward" in model.code and "# N x 832 x 7 x 7" in model.code


@pytest.mark.slow
def test_generated_source_runs_in_a_fresh_process(tmp_path):
    model_py = tmp_path / "googlenet_small.py"
    result = run_archc("build", str(SMALL), "--emit", "python", "-o", str(model_py), "--quiet")
    assert result.returncode == 0, result.stderr
    source = model_py.read_text()
    assert "archcompiler" not in source.split('"""', 2)[2]          # depends on torch alone
    model = archcompiler.build(SMALL, seed=1).eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    x = torch.randn(2, 3, 64, 64)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(x), tmp_path / "y.pt")
    script = (
        "import importlib.util, sys, torch\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(model_py)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert 'archcompiler' not in sys.modules\n"
        "net = m.GooglenetSmall(); net.load_state_dict(torch.load(sys.argv[1])); net.eval()\n"
        "x = torch.load(sys.argv[2]); y = torch.load(sys.argv[3])\n"
        "with torch.no_grad(): out = net(x)\n"
        "assert torch.equal(out, y), (out - y).abs().max()\n"
        "print('identical')\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "w.pt"), str(tmp_path / "x.pt"),
                           str(tmp_path / "y.pt")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "identical" in done.stdout


def test_load_model_round_trip(tmp_path):
    path = tmp_path / "model.pt"
    result = run_archc("build", str(SMALL), "-o", str(path), "--seed", "5", "--quiet")
    assert result.returncode == 0, result.stderr
    model = archcompiler.load_model(path).eval()
    again = archcompiler.build(SMALL, seed=5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_exports_work_on_the_generated_module():
    spec = archcompiler.load_spec(SMALL)
    model = archcompiler.build(spec, seed=0).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        traced = torch.jit.trace(model, x)
        assert torch.allclose(traced(x), ref, atol=1e-5)
        exported = torch.export.export(model, (x,))
        assert torch.allclose(exported.module()(x), ref, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_works_on_a_small_spec():
    text = ("name: tiny\ninput: [3, 16, 16]\nlayers:\n"
            "  - {name: c, op: conv, out: 4, kernel: 3, norm: batch_norm, act: relu}\n"
            "  - {name: p, op: max_pool, kernel: 2, ceil_mode: true}\n"
            "  - {name: fc, op: linear, out: 3}\n")
    model = archcompiler.build(text, seed=0).eval()
    x = torch.randn(2, 3, 16, 16)
    compiled = torch.compile(model)          # inductor: generates and compiles C++ for this CPU
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x))


def test_outputs_are_written_atomically(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    result = run_archc("build", str(SPECS / "googlenet.yaml"), "-o", str(target), "--weights", "missing.pt")
    assert result.returncode == 1 and "no such weights file" in result.stderr
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_torchscript_scripting():
    model = archcompiler.build(SPECS / "resnet18.yaml", seed=0).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(model)(x), model(x), atol=1e-5)
    # with training-only heads a scripted model always returns the named tuple (as torchvision's
    # scripted GoogLeNet does); the heads are None in eval mode
    model = archcompiler.build(SMALL, seed=0).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = scripted(x)
        assert torch.allclose(out.main, model(x), atol=1e-5) and out.aux1 is None
    scripted.train()
    assert scripted(x).aux1.shape == (2, 10)


# ----------------------------------------------------------------------------- at run time

def test_an_input_of_the_wrong_size_says_what_to_do():
    model = archcompiler.build(SPECS / "googlenet.yaml").eval()
    with pytest.raises(ValueError) as info:
        model(torch.randn(1, 3, 256, 256))
    message = str(info.value)
    assert "takes images of 224x224x3" in message and "(1, 3, 256, 256)" in message
    assert "--set input=[C,H,W]" in message
    # and the advice works: built for 256x256, it takes 256x256
    bigger = archcompiler.build(SPECS / "googlenet.yaml", overrides={"input": [3, 256, 256]}).eval()
    with torch.no_grad():
        assert bigger(torch.randn(1, 3, 256, 256)).shape == (1, 1000)


@pytest.mark.parametrize("loss", ["binary_cross_entropy", "cross_entropy"])
def test_losses_take_indices_and_one_hot_targets(loss):
    model = archcompiler.build(SMALL, overrides={"num_classes": 2, "loss": loss}, seed=0).train()
    outputs = model(torch.randn(4, 3, 64, 64))
    indices = torch.tensor([0, 1, 1, 0])
    one_hot = F.one_hot(indices, 2)
    values = [model.loss(outputs, t).item() for t in (indices, one_hot, one_hot.float(), one_hot.to(torch.int32))]
    assert max(values) - min(values) < 1e-6, values


def test_a_built_module_carries_one_archc_info_object():
    from archcompiler.backends.torch import ArchcInfo, archc_info

    model = archcompiler.build(SMALL, seed=0)
    info = archc_info(model)
    assert isinstance(info, ArchcInfo) and model.archc is info
    assert info.name == "googlenet_small" and info.heads and info.optimizations is None
    assert all(model.get_submodule(path) is not None for path in info.module_paths.values())
    assert not [name for name in vars(model) if name.startswith("archc_")]
    optimized = archcompiler.build(SMALL, seed=0, optimize=True)
    assert archc_info(optimized).spec == info.spec and not archc_info(optimized).heads
    assert [o["pass"] for o in archc_info(optimized).optimizations]
    with pytest.raises(BackendError, match="not built by archc"):
        archc_info(torch.nn.Linear(2, 2))


def test_the_drop_heads_hint_follows_the_training_only_fact_not_the_name():
    """A head named anything (here 'side') is recognised as training-only from the graph; a missing
    tensor of the main path gets no such hint, even in a layer whose name contains 'aux'."""
    text = ("name: t\ninput: [3, 8, 8]\nlayers:\n"
            "  - {name: auxconv, op: conv, out: 4, kernel: 3}\n"
            "  - {name: pool, op: global_avg_pool}\n"
            "  - {name: fc, op: linear, out: 2}\n"
            "  - {name: side, op: linear, out: 2, input: pool}\n"
            "outputs:\n  main: {layer: fc}\n  extra: {layer: side, training_only: true, weight: 0.3}\n")
    state = archcompiler.build(text, seed=0).state_dict()
    hint = "--drop-training-heads"
    for missing, hinted in (("side.weight", True), ("auxconv.weight", False)):
        with pytest.raises(BackendError) as info:
            archcompiler.build(text, weights={k: v for k, v in state.items() if k != missing})
        assert any(missing in d.message for d in info.value.errors)
        assert any(hint in d.message for d in info.value.errors) is hinted, missing


def test_a_layer_named_like_a_helper_of_the_generated_code_does_not_shadow_it():
    """A layer named stochastic_depth (torchvision's EfficientNet names its module so; archc import
    keeps the name) gets the variable stochastic_depth_: the helper of that name stays callable."""
    spec = archcompiler.load_spec("name: sd\ninput: [3, 8, 8]\nlayers:\n"
                                  "  - {name: conv, op: conv, out: 4, kernel: 3, padding: 1}\n"
                                  "  - {name: stochastic_depth, op: stochastic_depth, p: 0.1}\n"
                                  "  - {name: add, op: add, inputs: [stochastic_depth, conv]}\n")
    model = archcompiler.build(spec).eval()
    assert "stochastic_depth_ = stochastic_depth(" in model.code
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 4, 8, 8)


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_predict_proba_without_a_final_softmax_gives_what_the_loss_trains_for(loss):
    """A spec that ends in its logits (tests/data/digits-cnn.yaml): predict_proba is the softmax that
    cross-entropy trains the logits for, or each unit's sigmoid for binary cross-entropy, never the raw
    logits (`archc predict` printed them as '120.83%')."""
    spec = archcompiler.load_spec(ROOT / "tests" / "data" / "digits-cnn.yaml", {"loss": loss})
    model = archcompiler.build(spec, seed=0)
    x = torch.randn(3, 1, 16, 16)
    p, logits = model.predict_proba(x), model.eval()(x)
    expected = torch.softmax(logits, 1) if loss == "cross_entropy" else torch.sigmoid(logits)
    torch.testing.assert_close(p, expected)
    assert ((p >= 0) & (p <= 1)).all()


def test_the_generated_class_never_takes_a_helpers_name():
    """A spec named after a helper class the generated file holds (window_attention -> WindowAttention) gets
    another class name; a torch.class_name that is one is refused at the spec (it was an internal error)."""
    from archcompiler.backends.torch.codegen import class_name

    base = "input: [3, 16, 16]\nlayers:\n  - {name: c, op: conv, out: 4, kernel: 3}\n"
    assert class_name(archcompiler.load_spec("name: window_attention\n" + base)) == "WindowAttentionNet"
    with pytest.raises(BackendError, match="a helper the generated code holds"):
        archcompiler.build(archcompiler.load_spec("name: n\n" + base + "torch: {class_name: WindowAttention}\n"))
