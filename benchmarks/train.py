"""Training speed.  Run:  python benchmarks/train.py

1. A training step (forward with the auxiliary heads, the spec's weighted losses, backward, SGD
   step) of the module archc builds from specs/googlenet-torchvision.yaml against the hand-written
   torchvision-style GoogLeNet (benchmarks/handwritten_googlenet.py) holding the same weights, same
   batch, interleaved repetitions. Target: compiled / hand-written images/s >= 0.97.
2. The data loader alone (archc's ImageFolder with the training transforms: decode, random resized
   crop, flip, normalise) against the training step of specs/googlenet-small.yaml, batch 32. Target:
   the loader delivers more images/s than training consumes (it is not the bottleneck).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleave, machine, median  # noqa: E402
from handwritten_googlenet import GoogLeNet  # noqa: E402

import archcompiler  # noqa: E402
from archcompiler.training.data import ImageFolder, Preprocess, collate, scan  # noqa: E402

SPECS = Path(__file__).resolve().parent.parent / "specs"


def training_steps(repeats: int, batch: int) -> tuple[float, float]:
    compiled = archcompiler.build(SPECS / "googlenet-torchvision.yaml", seed=0).train()
    hand = GoogLeNet()
    hand.load_state_dict(compiled.state_dict())
    hand.train()
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 1000, (batch,))
    opt_c = torch.optim.SGD(compiled.parameters(), lr=1e-3, momentum=0.9)
    opt_h = torch.optim.SGD(hand.parameters(), lr=1e-3, momentum=0.9)

    def step_compiled():
        loss = compiled.loss(compiled(x), y)
        opt_c.zero_grad()
        loss.backward()
        opt_c.step()

    def step_hand():
        out, aux2, aux1 = hand(x)
        loss = F.cross_entropy(out, y) + 0.3 * F.cross_entropy(aux1, y) + 0.3 * F.cross_entropy(aux2, y)
        opt_h.zero_grad()
        loss.backward()
        opt_h.step()

    step_compiled(), step_hand()                     # warm-up
    times = interleave({"compiled": step_compiled, "hand": step_hand}, repeats)
    return batch / median(times["compiled"]), batch / median(times["hand"])


def loader_vs_training(images: int, batch: int, workers: int) -> tuple[float, float]:
    from PIL import Image

    spec = archcompiler.load_spec(SPECS / "googlenet-small.yaml", ["num_classes=2"])
    with tempfile.TemporaryDirectory() as tmp:
        rng = random.Random(0)
        for n in range(images):                      # photos of a realistic small size, as JPEG
            folder = Path(tmp) / ("cats" if n % 2 else "dogs")
            folder.mkdir(exist_ok=True)
            pixels = bytes(rng.getrandbits(8) for _ in range(160 * 120 * 3))
            Image.frombytes("RGB", (160, 120), pixels).save(folder / f"{n}.jpg", quality=90)
        _, samples = scan(tmp)
        data = ImageFolder(samples, Preprocess.from_spec(spec), train=True, seed=0)
        loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers,
                                             collate_fn=collate)
        for _ in loader:                             # warm-up (file cache, worker start)
            pass
        start = time.perf_counter()
        for _ in loader:
            pass
        loader_rate = images / (time.perf_counter() - start)
    model = archcompiler.build(spec, seed=0).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, *spec.input), torch.randint(0, 2, (batch,))

    def step():
        loss = model.loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()
    times = interleave({"step": step}, 10)
    return loader_rate, batch / median(times["step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; torch {torch.__version__}, {args.threads} threads\n")
    compiled, hand = training_steps(args.repeats, args.batch)
    print(f"GoogLeNet training step, batch {args.batch} (median of {args.repeats}, interleaved):")
    print(f"  archc       {compiled:7.2f} images/s")
    print(f"  hand-written {hand:7.2f} images/s")
    print(f"  ratio       {compiled / hand:7.3f}   (target >= 0.97)\n")
    loader, train = loader_vs_training(512, 32, args.workers)
    print(f"googlenet-small, batch 32, {args.workers} loader workers:")
    print(f"  data loader alone  {loader:7.1f} images/s (JPEG decode, random resized crop, flip, normalise)")
    print(f"  training step      {train:7.1f} images/s")
    print(f"  loader / training  {loader / train:7.2f}   (target > 1: the loader is not the bottleneck)")


if __name__ == "__main__":
    main()
