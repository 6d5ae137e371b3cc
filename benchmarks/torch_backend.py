"""Does compiling from YAML cost anything at run time?  Run:  python benchmarks/torch_backend.py

Compares the module archc builds from specs/googlenet-torchvision.yaml with a hand-written
torchvision-style GoogLeNet (benchmarks/handwritten_googlenet.py) holding the same weights:
- eval forward latency at batch 1 and 8;
- one training step (forward, loss with auxiliary heads, backward, SGD step) at batch 8;
- building: archcompiler.build(spec) vs constructing the hand-written module (both initialise
  the same weights the same way).
Interleaved repetitions, same thread count, medians. Targets: compiled / hand-written <= 1.03 for
forward and training; building costs <= 50 ms more than the hand-written constructor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleave, machine, median  # noqa: E402
from handwritten_googlenet import GoogLeNet  # noqa: E402

import archcompiler  # noqa: E402

SPEC = Path(__file__).resolve().parent.parent / "specs" / "googlenet-torchvision.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; torch {torch.__version__}, {args.threads} threads\n")

    compiled = archcompiler.build(SPEC, seed=0)
    hand = GoogLeNet()
    hand.load_state_dict(compiled.state_dict())        # same names, same weights
    compiled.eval(), hand.eval()
    x8 = torch.randn(8, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(compiled(x8), hand(x8), atol=1e-5), "the two models disagree"

    results = []
    for batch in (1, 8):
        x = torch.randn(batch, 3, 224, 224)

        def run(model, x=x):
            with torch.no_grad():
                model(x)
        run(compiled), run(hand)                           # warm-up
        times = interleave({"compiled": lambda: run(compiled), "hand-written": lambda: run(hand)}, args.repeats)
        results.append((f"eval forward, batch {batch}", median(times["compiled"]), median(times["hand-written"])))

    target = torch.randint(0, 1000, (8,))
    opt_c = torch.optim.SGD(compiled.parameters(), lr=1e-3)
    opt_h = torch.optim.SGD(hand.parameters(), lr=1e-3)

    def step_compiled():
        out = compiled(x8)
        loss = compiled.loss(out, target)
        opt_c.zero_grad()
        loss.backward()
        opt_c.step()

    def step_hand():
        out = hand(x8)
        loss = (F.cross_entropy(out.logits, target) + 0.3 * F.cross_entropy(out.aux_logits1, target)
                + 0.3 * F.cross_entropy(out.aux_logits2, target))
        opt_h.zero_grad()
        loss.backward()
        opt_h.step()
    compiled.train(), hand.train()
    step_compiled(), step_hand()
    times = interleave({"compiled": step_compiled, "hand-written": step_hand}, max(5, args.repeats // 2))
    results.append(("training step, batch 8", median(times["compiled"]), median(times["hand-written"])))

    print(f"{'':28s} {'archc':>10s} {'hand':>10s} {'ratio':>7s}   target <= 1.03")
    for name, c, h in results:
        ratio = c / h
        print(f"{name:28s} {1000 * c:8.1f}ms {1000 * h:8.1f}ms {ratio:7.3f}   {'met' if ratio <= 1.03 else 'MISSED'}")

    spec = archcompiler.load_spec(SPEC)
    archcompiler.build(spec), GoogLeNet()                 # warm-up
    times = interleave({"build": lambda: archcompiler.build(spec, seed=0), "hand": lambda: GoogLeNet()},
                       max(5, args.repeats // 2))
    b, h = median(times["build"]), median(times["hand"])
    full = interleave({"yaml": lambda: archcompiler.build(SPEC, seed=0)}, max(5, args.repeats // 2))
    print(f"\nbuilding: archcompiler.build(resolved spec) {1000 * b:.1f} ms, hand-written constructor "
          f"{1000 * h:.1f} ms: {1000 * (b - h):+.1f} ms   target <= +50 ms: {'met' if b - h <= 0.05 else 'MISSED'}")
    print(f"          from the YAML file (parse, validate, analyse, generate, build): "
          f"{1000 * median(full['yaml']):.1f} ms")


if __name__ == "__main__":
    main()
