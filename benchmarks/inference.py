"""Inference speed: does archc --optimize beat what a person tunes by hand?  Run:  python benchmarks/inference.py

GoogLeNet (torchvision's layout, specs/googlenet-torchvision.yaml), eval mode, the same weights in
every variant (the script first checks they agree):
- plain: the torchvision-style hand-written module (benchmarks/handwritten_googlenet.py), eager, NCHW;
- hand-tuned: the same, BatchNorm folded with torch.fx.experimental.optimization.fuse, channels_last
  (the input converted inside the timed call, as archc's module does);
- archc: the module `archc build` makes; archc --optimize: `archcompiler.build(spec, optimize=True)`;
  +siblings: the same with the fuse_siblings pass (horizontal fusion of the 1x1 convolutions);
- with --compile: torch.compile of the hand-tuned module against `build(spec, optimize=True, compile=True)`
  (batch 8 only: each compile takes about a minute on 2 cores).
Batches 1, 8, 32; interleaved repetitions, the order rotated every round; min and median.
Targets at batch 8: --optimize >= 2.0x plain and >= 1.0x hand-tuned (goal 1.1x);
--optimize --compile >= 1.1x torch.compile of the hand-tuned module.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.fx.experimental.optimization import fuse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine  # noqa: E402
from handwritten_googlenet import GoogLeNet  # noqa: E402

import archcompiler  # noqa: E402

SPEC = Path(__file__).resolve().parent.parent / "specs" / "googlenet-torchvision.yaml"


def rotated(candidates: dict, x: torch.Tensor, repeats: int) -> dict[str, list[float]]:
    names = list(candidates)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for name in names:                       # warm-up
            candidates[name](x)
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                start = time.perf_counter()
                candidates[name](x)
                times[name].append(time.perf_counter() - start)
    return times


def report(title: str, times: dict[str, list[float]], base: str, ref: str) -> None:
    print(title)
    print(f"  {'variant':<26} {'min ms':>8} {'median ms':>10} {'vs ' + base:>12} {'vs ' + ref:>16}")
    b, r = statistics.median(times[base]), statistics.median(times[ref])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:<26} {1e3 * min(values):8.1f} {1e3 * med:10.1f} {b / med:11.2f}x {r / med:15.2f}x")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparison")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; torch {torch.__version__}, {args.threads} threads\n")

    archc = archcompiler.build(SPEC, seed=0).eval()
    with torch.no_grad():                        # non-trivial BatchNorm statistics, so folding matters
        g = torch.Generator().manual_seed(0)
        for m in archc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    state = archc.state_dict()
    plain = GoogLeNet()
    plain.load_state_dict(state)
    plain.eval()
    tuned = fuse(GoogLeNet().eval())
    tuned.load_state_dict(fuse(plain).state_dict())
    tuned = tuned.to(memory_format=torch.channels_last).eval()
    optimized = archcompiler.build(SPEC, weights=state, optimize=True)
    siblings = archcompiler.build(SPEC, weights=state, optimize=["eval_only", "fold_batch_norm", "fuse_activation",
                                                                  "fuse_siblings", "choose_layout"])

    def hand_tuned(x: torch.Tensor, model=tuned) -> torch.Tensor:
        return model(x.contiguous(memory_format=torch.channels_last))

    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = plain(x)
        for name, fn in (("archc", archc), ("hand-tuned", hand_tuned), ("archc --optimize", optimized),
                         ("+ fuse_siblings", siblings)):
            err = (fn(x) - expected).abs().max().item() / expected.abs().max().item()
            assert err < 1e-4, f"{name} disagrees with the plain module ({err})"
    variants = {"plain (eager, NCHW)": plain, "hand-tuned (fuse + NHWC)": hand_tuned, "archc": archc,
                "archc --optimize": optimized, "archc --optimize +siblings": siblings}
    for batch in args.batches:
        times = rotated(variants, torch.randn(batch, 3, 224, 224), args.repeats)
        report(f"batch {batch} (median of {args.repeats}):", times, "plain (eager, NCHW)", "hand-tuned (fuse + NHWC)")

    if not args.no_compile:
        x8 = torch.randn(8, 3, 224, 224)
        start = time.perf_counter()
        tuned_compiled = torch.compile(tuned)
        with torch.no_grad():
            tuned_compiled(x8.contiguous(memory_format=torch.channels_last))
        print(f"torch.compile of the hand-tuned module: first call {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        archc_compiled = archcompiler.build(SPEC, weights=state, optimize=True, compile=True)
        with torch.no_grad():
            archc_compiled(x8)
        print(f"archc --optimize --compile: first call {time.perf_counter() - start:.0f} s\n")

        def hand_compiled(x: torch.Tensor) -> torch.Tensor:
            return tuned_compiled(x.contiguous(memory_format=torch.channels_last))

        times = rotated({"torch.compile(hand-tuned)": hand_compiled, "archc --optimize --compile": archc_compiled,
                         "archc --optimize": optimized, "archc --optimize +siblings": siblings}, x8, args.repeats)
        report(f"batch 8, compiled (median of {args.repeats}):", times, "torch.compile(hand-tuned)",
               "torch.compile(hand-tuned)")


if __name__ == "__main__":
    main()
