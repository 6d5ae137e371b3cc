"""The generated modules' helpers are ordinary Python in backends/torch/runtime.py, tested here, and
the generated source carries their text (so ``--emit python`` stays standalone)."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch
import torch.nn.functional as F

from archcompiler.backends.torch import runtime


def test_spec_loss_cross_entropy_takes_indices_and_integer_one_hot():
    torch.manual_seed(0)
    logits, target = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    expected = F.cross_entropy(logits, target)
    assert torch.allclose(runtime.spec_loss("cross_entropy", False, logits, target), expected)
    assert torch.allclose(runtime.spec_loss("cross_entropy", False, logits, F.one_hot(target, 3)), expected)


def test_spec_loss_binary_cross_entropy_of_a_final_softmax():
    torch.manual_seed(0)
    logits, target = torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 1])
    p, t = F.softmax(logits, dim=1), F.one_hot(target, 2).float()
    expected = F.binary_cross_entropy(p, t)
    got = runtime.spec_loss("binary_cross_entropy", True, logits, target)
    assert torch.allclose(got, expected, atol=1e-6)


def test_log1m_softmax_is_exact_and_stays_finite_where_the_naive_formula_does_not():
    z = torch.tensor([[0.5, -1.0, 2.0]])
    assert torch.allclose(runtime._log1m_softmax(z), torch.log1p(-F.softmax(z, dim=1)), atol=1e-6)
    extreme = torch.tensor([[200.0, 0.0, -50.0]])
    assert torch.isfinite(runtime._log1m_softmax(extreme)).all()


def test_check_input_says_what_size_the_spec_takes():
    runtime.check_input(torch.zeros(1, 3, 8, 8), [3, 8, 8], "net")
    with pytest.raises(ValueError, match=r"net takes images of 8x8x3 .* --set input=\[C,H,W\]"):
        runtime.check_input(torch.zeros(1, 3, 9, 8), [3, 8, 8], "net")


def test_conv_act_is_the_convolution_then_relu():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(runtime.conv_act(x, conv, "relu"), F.relu(conv(x)), atol=1e-5)


def test_the_generated_source_carries_the_helpers_text_and_imports_only_torch(tiny_model_code):
    for helper in (runtime._log1m_softmax, runtime.spec_loss, runtime.check_input):
        assert inspect.getsource(helper) in tiny_model_code
    tree = ast.parse(tiny_model_code)
    imported = {a.name if isinstance(n, ast.Import) else n.module for n in tree.body
                if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert {m.split(".")[0] for m in imported} <= {"typing", "torch"}


@pytest.fixture(scope="module")
def tiny_model_code():
    from conftest import ROOT

    from archcompiler.backends.torch.codegen import generate
    from archcompiler.passes import annotated_graph
    from archcompiler.spec import load_spec

    spec = load_spec(ROOT / "specs" / "googlenet-small.yaml")
    return generate(annotated_graph(spec), spec).source


def test_every_helper_is_named_from_runtime_and_its_text_runs_where_generated_modules_put_it():
    """The helpers live in runtime.py and its sibling modules (runtime_tokens, runtime_windows); ops name
    each ``archcompiler.backends.torch.runtime:Name``, and a generated module holds its text beside only
    the imports that module has: each text, run there, defines its name."""
    from archcompiler.ir import OPS

    named = {op.torch.helper.partition(":")[2] for op in OPS.values()
             if op.torch.helper and op.torch.helper.startswith(runtime.__name__ + ":")}
    assert named <= set(runtime.IN_GENERATED)
    header = ("from typing import List, NamedTuple, Optional\n\nimport torch\n"
              "import torch.nn.functional as F\nfrom torch import Tensor, nn\n")
    for name in runtime.IN_GENERATED:
        space: dict = {}
        exec(compile(header + runtime.helper_source(getattr(runtime, name)), name, "exec"), space)
        assert callable(space[name]), name
