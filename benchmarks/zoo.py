"""Is a zoo network compiled from its paper's table as fast as torchvision's own?  Run in an environment
that has torchvision (it is never a dependency of archc):  python benchmarks/zoo.py [--builders ...]

For each builder: archc's module (archcompiler.build(NAME)) and torchvision's (torchvision.models.NAME),
holding the same weights (archc's keys are torchvision's), interleaved at batch 8:
- eval forward, and one training step (forward, cross-entropy, backward, SGD step), archc / torchvision;
- archc's --optimize module against torchvision's hand-tuned one (torch.fx's BatchNorm folding, the
  same fusion torchvision documents for inference, and channels-last), eval forward.
Each ratio is the median over rounds of the two times measured in that round. Targets: the compiled
module at least 0.97x torchvision's speed (time ratio <= 1.03); --optimize at
least 1.0x the hand-tuned one (ratio <= 1.0). Ratios below 1 mean archc is faster."""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleave, machine, median, paired  # noqa: E402

import archcompiler  # noqa: E402

BUILDERS = ["resnet50", "mobilenet_v3_large", "efficientnet_b0", "densenet121", "convnext_tiny", "vit_b_16", "swin_t"]


def hand_tuned(model: torch.nn.Module) -> torch.nn.Module:
    """torchvision's model for inference by hand: BatchNorm folded into the convolutions (torch.fx's
    fuse, as PyTorch's tutorial does it) and channels-last."""
    from torch.fx.experimental.optimization import fuse

    return fuse(copy.deepcopy(model).eval()).to(memory_format=torch.channels_last)


def main() -> None:
    import torchvision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builders", nargs="+", default=BUILDERS)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    print(f"machine: {machine()}; torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{torch.get_num_threads()} threads, batch {args.batch}\n")
    print(f"{'builder':<20} {'eval':>8} {'train step':>11} {'--optimize vs hand-tuned':>26}")
    for name in args.builders:
        compare(name, args)


def compare(name: str, args: argparse.Namespace) -> None:
    """One builder: archc's module against torchvision's, and --optimize against the hand-tuned one."""
    import torchvision

    theirs = getattr(torchvision.models, name)(weights=None).eval()
    weights = theirs.state_dict()
    ours = archcompiler.build(name, weights=weights, check_memory=False).eval()
    fast = archcompiler.build(name, weights=weights, optimize=True, check_memory=False)
    tuned = hand_tuned(theirs)
    spec = archcompiler.load_spec(name)
    x = torch.randn(args.batch, *spec.input)
    with torch.no_grad():
        expected = theirs(x)
        for model in (ours, fast, tuned):
            got = model(x.contiguous(memory_format=torch.channels_last) if model is tuned else x)
            assert (got - expected).abs().max() <= 1e-3 * expected.abs().max(), f"{name}: the models disagree"

    def forward(model, layout=torch.contiguous_format):
        inp = x.contiguous(memory_format=layout)

        def run():
            with torch.no_grad():
                model(inp)
        return run

    evals = interleave({"archc": forward(ours), "torchvision": forward(theirs),
                        "optimized": forward(fast), "tuned": forward(tuned, torch.channels_last)}, args.repeats)

    target = torch.randint(0, 1000, (args.batch,))
    train_a, train_t = copy.deepcopy(ours).train(), copy.deepcopy(theirs).train()
    opts = {id(m): torch.optim.SGD(m.parameters(), lr=1e-4) for m in (train_a, train_t)}

    def step(model):
        def run():
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            F.cross_entropy(out, target).backward()
            opts[id(model)].step()
            opts[id(model)].zero_grad(set_to_none=True)
        return run

    steps = interleave({"archc": step(train_a), "torchvision": step(train_t)}, max(3, args.repeats // 2))
    ratio = paired(evals["archc"], evals["torchvision"])
    train_ratio = paired(steps["archc"], steps["torchvision"])
    opt_ratio = paired(evals["optimized"], evals["tuned"])
    print(f"{name:<20} {ratio:>7.3f}x {train_ratio:>10.3f}x {opt_ratio:>25.3f}x   "
          f"(torchvision eval {median(evals['torchvision']) * 1e3:.0f} ms, hand-tuned "
          f"{median(evals['tuned']) * 1e3:.0f} ms)", flush=True)


if __name__ == "__main__":
    main()
