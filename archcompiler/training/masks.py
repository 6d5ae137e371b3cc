"""Segmentation data: images and their masks, one class index per pixel.

The layout is the one segmentation datasets ship in (Pascal VOC's ``JPEGImages`` / ``SegmentationClass``,
Cityscapes', ADE20K's): ``DATA/images/NAME.jpg`` and ``DATA/masks/NAME.png``, a mask for each image under
the same name; a mask is a grayscale or palette PNG whose pixel values are class indices, 255 meaning
"not labelled" (VOC's object borders), which the loss and the metrics leave out. ``DATA/classes.txt``
(optional) names the classes, one per line. An image and its mask go through the same crop and flip;
the image is resampled as the spec's ``data:`` says, the mask by nearest neighbour.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from .data import EXTENSIONS, ImageError, ImageFolder, _fail, read_image

IGNORE = 255                   # a mask's "not labelled" value
IGNORE_INDEX = -100            # the same in a target tensor: torch's cross_entropy leaves it out
MAX_CLASSES = 255


def is_mask_folder(folder: str | Path) -> bool:
    root = Path(folder)
    return (root / "images").is_dir() and (root / "masks").is_dir()


def scan_masks(folder: str | Path, classes: int) -> tuple[list[str], list[tuple[Path, Path]]]:
    """The class names (``classes.txt``, or ``0`` .. ``classes - 1``) and the (image, mask) pairs."""
    root = Path(folder)
    if not is_mask_folder(root):
        raise _fail(f"{root} has no images/ and masks/ folders", root,
                    hint="a segmentation network trains on DATA/images/NAME.jpg with DATA/masks/NAME.png (one "
                         "class index per pixel, 255 not labelled)")
    masks = {p.stem: p for p in sorted((root / "masks").iterdir()) if p.suffix.lower() in EXTENSIONS and p.is_file()}
    pairs, alone = [], []
    for image in sorted((root / "images").iterdir()):
        if image.suffix.lower() in EXTENSIONS and image.is_file():
            (pairs.append((image, masks[image.stem])) if image.stem in masks else alone.append(image))
    if alone:
        raise _fail(f"{len(alone)} image(s) in {root / 'images'} have no mask, first {alone[0].name}", root,
                    hint=f"each image needs {root / 'masks'}/NAME.png under its own name")
    return _class_names(root, classes), pairs


def _class_names(root: Path, classes: int) -> list[str]:
    listed = root / "classes.txt"
    if not listed.is_file():
        return [str(i) for i in range(classes)]
    from ..modelfile import has_control

    try:
        names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines()[:MAX_CLASSES + 1]]
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read {listed}: {exc}", listed) from None
    names = [n for n in names if n]
    if len(names) != classes or any(has_control(n) or len(n) > 200 for n in names):
        raise _fail(f"{listed} names {len(names)} classes, the network's output has {classes}", listed,
                    hint="one class name per line, as many as the network's output channels")
    return names


def read_mask(path: str | Path) -> Any:
    """A mask image (grayscale or palette: one class index per pixel)."""
    img = read_image(path)
    if img.mode == "1":
        img = img.convert("L")
    if img.mode not in ("L", "P"):
        raise ImageError(f"{path} is a {img.mode} image; a mask holds one class index per pixel (a grayscale or "
                         "palette PNG)")
    return img


def _target(mask: Any) -> torch.Tensor:
    y = torch.frombuffer(bytearray(mask.tobytes()), dtype=torch.uint8).view(mask.height, mask.width).long()
    y[y == IGNORE] = IGNORE_INDEX
    return y


class MaskFolder(ImageFolder):
    """(image, mask) pairs of one split (``samples``); ``__getitem__`` gives ``(image, target, index)``, the
    target a long tensor of class indices (-100 where not labelled), or ``(None, None, index)`` for a pair that
    cannot be read (or whose image and mask differ in size), which :func:`~.data.collate` drops and counts."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
        from PIL import Image

        image_path, mask_path = self.samples[index]
        pre = self.preprocess
        try:
            img, mask = read_image(image_path), read_mask(mask_path)
        except (OSError, ValueError, SyntaxError):      # ImageError is a ValueError
            return None, None, index
        if img.size != mask.size:
            return None, None, index
        size = (pre.size, pre.size)
        box = (0, 0, *img.size)
        flip = False
        if self.train:
            rng = random.Random(hash((self.seed, self.epoch, index)))
            if pre.random_resized_crop:
                box = pre.random_box(*img.size, rng)
            flip = pre.horizontal_flip and rng.random() < 0.5
        img = img.resize(size, pre.resample(), box=box)
        mask = mask.resize(size, Image.NEAREST, box=box)
        if flip:
            img, mask = img.transpose(Image.FLIP_LEFT_RIGHT), mask.transpose(Image.FLIP_LEFT_RIGHT)
        return pre.to_tensor(img), _target(mask), index


def palette() -> list[int]:
    """Pascal VOC's colour map (class 0 black, 1 dark red, 2 dark green, ...; 255 cream): 256 RGB triples."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


def write_mask(path: Path, classes: torch.Tensor, size: tuple[int, int]) -> Path:
    """A predicted mask (H x W class indices) as a palette PNG of ``size`` (the image's width and height):
    its colours VOC's, its pixel values the class indices."""
    from PIL import Image

    from ..io import atomic_path

    h, w = classes.shape
    img = Image.frombytes("P", (w, h), bytes(classes.to(torch.uint8).flatten().tolist()))
    img.putpalette(palette())
    img = img.resize(size, Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
