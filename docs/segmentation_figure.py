"""docs/segmentation.png, the README's picture of segmentation: a small fully convolutional network trained
by `archc train` on synthetic shapes (a square, a disc; the square's outline not labelled), then
`archc predict` on validation images it never saw. Each row: the image, its mask, archc's predicted mask.

    python3 docs/segmentation_figure.py        (about a minute on 2 cores)
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

DOCS = Path(__file__).resolve().parent
SPEC = """name: shapes_fcn
input: [3, 48, 48]
params: {num_classes: 3}
layers:
  - {name: conv1, op: conv, out: 16, kernel: 3, padding: 1, norm: batch_norm, act: relu}
  - {name: conv2, op: conv, out: 32, kernel: 3, stride: 2, padding: 1, norm: batch_norm, act: relu}
  - {name: conv3, op: conv, out: 32, kernel: 3, padding: 2, dilation: 2, norm: batch_norm, act: relu}
  - {name: classifier, op: conv, out: num_classes, kernel: 1}
  - {name: upsample, op: interpolate, size_of: input, mode: bilinear}
train: {optimizer: adam, lr: 0.01, epochs: 12, batch_size: 16, schedule: cosine, seed: 0}
data: {random_resized_crop: false}
"""


def shapes(root: Path, n: int, seed: int) -> None:
    r = random.Random(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img, mask = Image.new("RGB", (64, 48), (r.randint(0, 60),) * 3), Image.new("L", (64, 48), 0)
        draw, label = ImageDraw.Draw(img), ImageDraw.Draw(mask)
        x, y = r.randint(0, 40), r.randint(0, 28)
        draw.rectangle([x, y, x + 19, y + 19], fill=(220, 40, 40))
        label.rectangle([x, y, x + 19, y + 19], fill=1, outline=255)
        x, y = r.randint(0, 42), r.randint(0, 28)
        draw.ellipse([x, y, x + 18, y + 18], fill=(40, 40, 220))
        label.ellipse([x, y, x + 18, y + 18], fill=2)
        img.save(root / "images" / f"{i:03d}.png")
        mask.save(root / "masks" / f"{i:03d}.png")
    (root / "classes.txt").write_text("background\nsquare\ndisc\n")


def archc(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "archcompiler", *args], cwd=cwd, check=True)


def main() -> None:
    from archcompiler.training.masks import palette

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shapes(work / "train", 192, 0)
        shapes(work / "val", 3, 1)
        (work / "shapes.yaml").write_text(SPEC)
        archc("train", "shapes.yaml", "--data", "train", "--val-split", "0.1", "--workers", "0", "--out", "run", "-q",
              cwd=work)
        images = sorted((work / "val" / "images").iterdir())
        archc("predict", "run/best.pt", *map(str, images), "--masks", "predicted", cwd=work)
        side = 4                                      # each picture drawn 4x, pixels kept sharp
        tiles = []
        for image in images:
            truth = Image.open(work / "val" / "masks" / image.name)
            truth.putpalette(palette())
            predicted = Image.open(work / "predicted" / image.name)
            tiles.append([Image.open(image).convert("RGB"), truth.convert("RGB"), predicted.convert("RGB")])
        w, h = tiles[0][0].size
        gap = 8
        sheet = Image.new("RGB", (3 * w * side + 2 * gap, len(tiles) * h * side + (len(tiles) - 1) * gap), "white")
        for row, pictures in enumerate(tiles):
            for col, picture in enumerate(pictures):
                sheet.paste(picture.resize((w * side, h * side), Image.NEAREST),
                            (col * (w * side + gap), row * (h * side + gap)))
        sheet.save(DOCS / "segmentation.png", optimize=True)
        print(f"wrote {DOCS / 'segmentation.png'}")


if __name__ == "__main__":
    main()
