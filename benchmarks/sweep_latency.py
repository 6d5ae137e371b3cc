"""The latency model judged by rank, as a user choosing between variants judges it.
Run:  python benchmarks/sweep_latency.py   (about 5-10 minutes on a 2-core VM)

Calibrates this machine (archc calibrate), then takes variants of several families from `archc zoo`
(widths, input sizes, batch 1 and 8, --optimize off and on), predicts each one's latency without
torch (what `archc sweep` shows) and measures it: all variants are built first, then timed in
interleaved rounds (every variant once per round, each round in a new order; one untimed warm-up
round), the median kept, so a machine whose speed steps during the run shifts every variant of a
round alike.
Reported, over all variants and within each (batch, --optimize) group:
- Spearman's rank correlation of predicted and measured latency (target >= 0.98), beside that of
  the FLOPs-only predictor (MACs at the batch) and the params-only one (params x batch), which the
  model has to beat to be worth having (a FLOPs count alone reaches ~0.95 on a desktop GPU);
- the median error of predicted ratios between pairs of variants, |(p_a / p_b) / (m_a / m_b) - 1|
  (target <= 10%), for the model and for FLOPs;
- the variants whose predicted rank is furthest from the measured one (where the model misses).
The calibration is not tuned to this run: the prediction is archc's, from the profile measured here.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleave, machine  # noqa: E402

import archcompiler  # noqa: E402
from archcompiler.measure.calibrate import calibrate  # noqa: E402
from archcompiler.sweeps.grid import ranks, spearman  # noqa: E402

# (zoo name, --set values): several families and widths
NETWORKS = [("mobilenet_v2", ["width_mult=0.5"]), ("mobilenet_v2", ["width_mult=1.0"]), ("resnet18", []),
            ("shufflenet_v2_x1_0", []), ("mnasnet0_5", []), ("squeezenet1_1", []), ("efficientnet_b0", []),
            ("regnet_x_400mf", []), ("vit_b_32", []), ("swin_t", [])]      # the last two: matmul and attention
SIZES = (96, 160)


def steady(fn):
    """``fn`` timed in its steady state: one untimed run first, then the timed one (the caller times
    only the second: :func:`_timing.interleave` counts the time a candidate returns). Run right after 79 other networks, a network's
    first call also pays for their eviction of its code, weights and allocator blocks: small networks
    at batch 1 measured 2-4x their repeated time (squeezenet1_1, 96x96: 18.7 against 4.5 ms), which is
    not the latency a user who serves the model sees, nor what archc predicts."""
    def run():
        fn()
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return run


def pair_error(pred: list[float], meas: list[float]) -> float:
    """Median over pairs of |(predicted ratio) / (measured ratio) - 1|."""
    return statistics.median(abs((pred[a] / pred[b]) / (meas[a] / meas[b]) - 1)
                             for a, b in itertools.combinations(range(len(pred)), 2))


def judge(label: str, cases: list[dict]) -> None:
    meas = [c["measured_ms"] for c in cases]
    model, flops, params = ([c[k] for c in cases] for k in ("predicted_ms", "macs", "params_x_batch"))
    print(f"{label:<26} {len(cases):>4} {spearman(model, meas):9.3f} {spearman(flops, meas):9.3f} "
          f"{spearman(params, meas):9.3f} {100 * pair_error(model, meas):10.1f}% {100 * pair_error(flops, meas):10.1f}%",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="calibrate with --quick, 2 rounds (a smoke run)")
    parser.add_argument("--save-profile", metavar="FILE", help="also write the calibration to FILE (json)")
    parser.add_argument("--save-times", metavar="FILE",
                        help="also write each variant's predicted and measured times to FILE (json)")
    args = parser.parse_args()
    print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads\n", flush=True)
    start = time.perf_counter()
    profile = calibrate(quick=args.quick)
    print(f"calibration: {time.perf_counter() - start:.1f} s", flush=True)
    if args.save_profile:
        Path(args.save_profile).write_text(json.dumps(profile, indent=1) + "\n")
    rounds = 2 if args.quick else args.rounds

    cases = []
    for (name, sets), size, batch, opt in itertools.product(NETWORKS, SIZES, (1, 8), (False, True)):
        overrides = [*sets, f"input=[3,{size},{size}]"]
        report = archcompiler.analyze(name, overrides, batch=batch, optimized=opt, latency=profile)
        cases.append({"name": f"{name} {' '.join(sets)} {size}px b{batch}{' opt' if opt else ''}".replace("  ", " "),
                      "network": name, "overrides": overrides,
                      "spec": archcompiler.load_spec(name, overrides), "batch": batch, "optimize": opt,
                      "predicted_ms": report["latency"]["predicted_ms"], "macs": report["total"]["macs"],
                      "params_x_batch": report["total"]["params"] * batch})
    print(f"{len(cases)} variants; building...", file=sys.stderr, flush=True)
    calls = {}
    for c in cases:
        model = archcompiler.build(c["spec"], seed=0, optimize=c["optimize"]).eval()
        x = torch.randn(c["batch"], *c["spec"].input)
        calls[c["name"]] = functools.partial(model, x)
    print(f"timing {rounds} interleaved rounds...", file=sys.stderr, flush=True)
    with torch.no_grad():
        interleave(calls, 1)                                     # warm-up round, untimed
        times = interleave({name: steady(fn) for name, fn in calls.items()}, rounds)
    for c in cases:
        c["measured_ms"] = 1e3 * statistics.median(times[c["name"]])
        c["spread"] = max(times[c["name"]]) / min(times[c["name"]])

    if args.save_times:
        Path(args.save_times).write_text(json.dumps([{k: v for k, v in c.items() if k != "spec"} for c in cases],
                                                    indent=1) + "\n")
    print(f"\n{'variants':<26} {'n':>4} {'Spearman':>9} {'FLOPs':>9} {'params':>9} {'pair err':>11} "
          f"{'FLOPs pair':>11}")
    judge("all", cases)
    for batch, opt in itertools.product((1, 8), (False, True)):
        judge(f"batch {batch}, optimize {'on' if opt else 'off'}", [c for c in cases
                                                                     if c["batch"] == batch and c["optimize"] == opt])
    pr, mr = ranks([c["predicted_ms"] for c in cases]), ranks([c["measured_ms"] for c in cases])
    print(f"\n{'variant':<44} {'predicted ms':>12} {'measured ms':>11} {'ratio':>6} {'rank p/m':>9} {'spread':>7}")
    for c, p, m in sorted(zip(cases, pr, mr), key=lambda t: -abs(t[1] - t[2])):
        print(f"{c['name']:<44} {c['predicted_ms']:12.2f} {c['measured_ms']:11.2f} "
              f"{c['predicted_ms'] / c['measured_ms']:6.2f} {p:4.0f}/{m:<4.0f} {c['spread']:6.2f}x")
    print(f"\nmedian spread between rounds of one variant (slowest / fastest): "
          f"{statistics.median(c['spread'] for c in cases):.2f}x")


if __name__ == "__main__":
    main()
