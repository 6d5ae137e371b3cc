"""Is a zoo network compiled from its paper's table as fast as torchvision's own?  Run in an environment
that has torchvision (it is never a dependency of archc):  python benchmarks/zoo.py [--builders ...]
(the segmentation builders too: --builders fcn_resnet50 ... --batch 2; their loss is per pixel)

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
    print(f"{'builder':<28} {'eval':>8} {'train step':>11} {'--optimize vs hand-tuned':>26}")
    for name in args.builders:
        compare(name, args)


def compare(name: str, args: argparse.Namespace) -> None:
    """One builder: archc's module against torchvision's, and --optimize against the hand-tuned one."""
    import torchvision

    # the segmentation builders as their published weights are: 21 classes, the auxiliary head on
    kwargs = {"aux_loss": True} if name.startswith(("fcn_", "deeplabv3_")) else {}
    if name.startswith(("fcn_", "deeplabv3_", "lraspp_")):
        kwargs["weights_backbone"] = None       # (nothing downloaded: random weights, copied into archc's)
    theirs = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    weights = theirs.state_dict()
    ours = archcompiler.build(name, weights=weights, check_memory=False).eval()
    fast = archcompiler.build(name, weights=weights, optimize=True, check_memory=False)
    try:
        tuned = hand_tuned(theirs)
    except Exception:       # torch.fx cannot trace it (a resize to the input's size): no hand-tuned module
        tuned = None
    spec = archcompiler.load_spec(name)
    x = torch.randn(args.batch, *spec.input)
    with torch.no_grad():
        expected = main_of(theirs(x))
        for model in (ours, fast, tuned):
            if model is None:
                continue
            got = main_of(model(x.contiguous(memory_format=torch.channels_last) if model is tuned else x))
            assert (got - expected).abs().max() <= 1e-3 * expected.abs().max(), f"{name}: the models disagree"

    def forward(model, layout=torch.contiguous_format):
        inp = x.contiguous(memory_format=layout)

        def run():
            with torch.no_grad():
                model(inp)
        return run

    runs = {"archc": forward(ours), "torchvision": forward(theirs), "optimized": forward(fast)}
    if tuned is not None:
        runs["tuned"] = forward(tuned, torch.channels_last)
    evals = interleave(runs, args.repeats)

    classes = expected.shape[1]          # a class per image, or per pixel (segmentation)
    target = torch.randint(0, classes, (args.batch, *expected.shape[2:]))
    train_a, train_t = copy.deepcopy(ours).train(), copy.deepcopy(theirs).train()
    opts = {id(m): torch.optim.SGD(m.parameters(), lr=1e-4) for m in (train_a, train_t)}

    def step(model):
        def run():
            F.cross_entropy(main_of(model(x)), target).backward()
            opts[id(model)].step()
            opts[id(model)].zero_grad(set_to_none=True)
        return run

    steps = interleave({"archc": step(train_a), "torchvision": step(train_t)}, max(3, args.repeats // 2))
    ratio = paired(evals["archc"], evals["torchvision"])
    train_ratio = paired(steps["archc"], steps["torchvision"])
    opt = f"{paired(evals['optimized'], evals['tuned']):>25.3f}x" if tuned is not None else f"{'(no fx trace)':>26}"
    tuned_ms = f", hand-tuned {median(evals['tuned']) * 1e3:.0f} ms" if tuned is not None else ""
    print(f"{name:<28} {ratio:>7.3f}x {train_ratio:>10.3f}x {opt}   "
          f"(torchvision eval {median(evals['torchvision']) * 1e3:.0f} ms{tuned_ms})", flush=True)


def main_of(out):
    """The main output: torchvision's segmentation dict's 'out', a named tuple's first field, the tensor."""
    if isinstance(out, dict):
        return out["out"]
    return out[0] if isinstance(out, tuple) else out


if __name__ == "__main__":
    main()
