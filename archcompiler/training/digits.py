"""A small real dataset to try ``archc train`` on: scikit-learn's handwritten digits (8x8 pixels,
1,797 images), written as an ImageFolder of PNGs, one sub-folder per digit.

    python3 -m archcompiler.training.digits digits/            # the 0s and 1s (360 images)
    python3 -m archcompiler.training.digits digits/ --all      # all ten digits
    python3 -m archcompiler.training.digits more/ --digits 2 3 8   # those three

Needs scikit-learn (which ``setup.sh`` installs with the test dependencies).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def write_digits(folder: str | Path, digits: tuple[int, ...] = (0, 1)) -> int:
    """Write the chosen digits as ``folder/<digit>/<n>.png``; return how many images."""
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    count = 0
    for digit in digits:
        target = Path(folder) / str(digit)
        target.mkdir(parents=True, exist_ok=True)
        for n, image in enumerate(data.images[data.target == digit]):
            pixels = bytes(int(v * 255 / 16) for v in image.flatten())
            Image.frombytes("L", (8, 8), pixels).save(target / f"{n}.png")
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m archcompiler.training.digits", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="where to write DIGIT/N.png")
    p.add_argument("--all", action="store_true", help="all ten digits (default: 0 and 1)")
    p.add_argument("--digits", type=int, nargs="+", choices=range(10), metavar="D", help="these digits (0-9)")
    args = p.parse_args(argv)
    n = write_digits(args.folder, tuple(range(10)) if args.all else tuple(args.digits or (0, 1)))
    print(f"wrote {n} images to {args.folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
