"""The stochastic_depth op (EfficientNet's and ConvNeXt's residual branches): the identity in evaluation,
torchvision.ops.stochastic_depth's rule in training, its rate from the block's position, its memory."""

from __future__ import annotations

import pytest

import archcompiler

torch = pytest.importorskip("torch")

BLOCK = """name: sd
input: [4, 6, 6]
params: {rate: 0.2}
blocks:
  res:
    args: {out: 4}
    layers:
      - {name: conv, op: conv, out: out, kernel: 3, padding: 1}
      - {name: drop, op: stochastic_depth, p: "rate * i / N", mode: MODE}
      - {name: add, op: add, inputs: [drop, in]}
layers:
  - table:
      use: res
      columns: [name, out, repeat]
      rows:
        - [stage, 4, 5]
  - {name: pool, op: global_avg_pool}
  - {name: fc, op: linear, out: 2}
"""


def _spec(mode: str = "row", rate: float = 0.2) -> str:
    return BLOCK.replace("MODE", mode).replace("rate: 0.2", f"rate: {rate}")


def test_the_rate_follows_the_blocks_position():
    spec = archcompiler.load_spec(_spec())
    rates = [layer.spec.p for layer in spec.layers if layer.spec.op == "stochastic_depth"]
    assert rates == pytest.approx([0.2 * i / 5 for i in range(5)])


def test_identity_in_evaluation_and_free_in_the_counts():
    model = archcompiler.build(_spec(rate=0.9), seed=0).eval()
    plain = archcompiler.build(_spec(rate=0.0), seed=0).eval()
    x = torch.randn(3, 4, 6, 6)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
    report = archcompiler.analyze(_spec())
    assert all(r["macs"] == 0 and r["params"] == 0 for r in report["rows"] if r["type"] == "stochastic_depth")


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_training_drops_whole_branches_and_scales_the_rest(mode):
    """Each sample's branch (row) or the batch's (batch) is either 0 or the branch / (1 - p): the rule
    of torchvision.ops.stochastic_depth, seeded by torch's generator."""
    text = ("name: t\ninput: [2, 3, 3]\nlayers:\n"
            f"  - {{name: drop, op: stochastic_depth, p: 0.5, mode: {mode}}}\n")
    model = archcompiler.build(text, seed=0).train()
    x = torch.rand(64, 2, 3, 3) + 1.0
    torch.manual_seed(1)
    y = model(x)
    ratio = (y / x).flatten(1)
    assert torch.all((ratio == 0) | torch.isclose(ratio, torch.tensor(2.0)))
    per_sample = ratio[:, 0]
    assert torch.equal(ratio, per_sample[:, None].expand_as(ratio))        # a whole sample at once
    kept = (per_sample > 0).float().mean().item()
    if mode == "batch":
        assert kept in (0.0, 1.0)
    else:
        assert 0.2 < kept < 0.8
    torch.manual_seed(1)
    assert torch.equal(model(x), y)                                          # seeded
    zeros = archcompiler.build(text.replace("p: 0.5", "p: 1.0"), seed=0).train()
    assert torch.count_nonzero(zeros(x)) == 0


def test_training_memory_matches_a_measurement():
    """In a chain, exactly as measured: the new tensor in training and the per-sample noise autograd keeps.
    (On a residual branch the measured peak is one map higher: the gradient the add hands both branches
    stays alive while the branch computes its own, which the memory pass does not model yet.)"""
    from archcompiler.measure.memory import measure_training_peak_bytes

    text = ("name: t\ninput: [4, 6, 6]\nlayers:\n  - {name: c1, op: conv, out: 8, kernel: 3, padding: 1}\n"
            "  - {name: drop, op: stochastic_depth, p: 0.3}\n  - {name: c2, op: conv, out: 8, kernel: 3, padding: 1}\n"
            "  - {name: pool, op: global_avg_pool}\n  - {name: fc, op: linear, out: 2}\n")
    predicted = archcompiler.analyze(text, batch=8, train_memory="sgd")["train_memory"]["peak"]
    torch.manual_seed(0)
    measured = measure_training_peak_bytes(archcompiler.build(text, seed=0), torch.randn(8, 4, 6, 6),
                                           torch.randint(0, 2, (8,)), "sgd")
    assert abs(predicted - measured) <= 0.01 * measured, (predicted, measured)


def test_generated_code_carries_its_helper_and_optimize_drops_it():
    source = archcompiler.build(_spec(), seed=0).code
    assert "def stochastic_depth(" in source and "stochastic_depth(" in source.split("def forward")[1]
    optimized = archcompiler.analyze(_spec(), optimized=True)
    assert not any(r["type"] == "stochastic_depth" for r in optimized["rows"])


@pytest.mark.parametrize("p", [-0.1, 1.5, "yes"])
def test_a_rate_outside_0_1_is_located(p):
    text = f"name: t\ninput: [2, 3, 3]\nlayers:\n  - {{name: drop, op: stochastic_depth, p: {p}}}\n"
    with pytest.raises(archcompiler.SpecError) as info:
        archcompiler.load_spec(text)
    (problem,) = info.value.errors
    assert problem.line == 4 and "p" in problem.path
