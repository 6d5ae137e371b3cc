"""Images from a folder, as the spec's ``data:`` section says to prepare them.

The layout is ImageFolder's: one sub-folder per class (``train/cats/*.jpg``, ``train/dogs/*.jpg``),
class names sorted. Images are decoded with Pillow (grayscale, palette and RGBA images become RGB)
and turned into tensors with torch alone. Every random choice of augmentation is drawn from a
generator seeded by (seed, epoch, image index), so a run gives the same batches whatever the number
of worker processes, whether it was resumed, and on one process or many.
"""

from __future__ import annotations

import math
import random
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import Location, RunError, SpecError, error

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
# evaluation resizes the whole image (shorter side to ``resize``) before its center crop; an image so
# elongated that this would exceed MAX_RESIZED_PIXELS (a 1 x 100,000 strip: billions) has only the
# part the crop keeps resized
MAX_RESIZED_PIXELS = 2**24


class ImageError(ValueError):
    """An image file that cannot be used: unreadable, or larger than Pillow's bound against
    decompression bombs. ``str()`` says which file and why, in one line."""


def read_image(path: str | Path, note: Callable[[str], None] | None = None) -> Any:
    """The image in ``path``, decoded. An image above twice Pillow's ``MAX_IMAGE_PIXELS`` (a
    decompression bomb: a small file that decodes to gigabytes) is refused before it is decoded;
    one above it (which Pillow warns about) is read, without Pillow's raw warning: ``note`` is told
    instead. ``FileNotFoundError`` passes; any other failure is an :class:`ImageError`."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as exc:
        limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 0
        size = re.search(r"\((\d+) pixels\)", str(exc))
        said = f"{int(size.group(1)):,} pixels, " if size else ""
        raise ImageError(f"{path} is too large to read: {said}more than {limit:,} (Pillow's bound against "
                         "decompression bombs); refused before decoding it") from None
    except Exception as exc:          # Pillow's decoders raise many kinds of error on a corrupt file
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ImageError(f"cannot read {path} as an image: {text}") from None
    w, h = img.size
    if note is not None and Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
        note(f"{path} is a large image ({w:,}x{h:,}, {w * h:,} pixels, more than Pillow's {Image.MAX_IMAGE_PIXELS:,}); "
             "it was read, which takes time and memory")
    return img


def _fail(message: str, where: str | Path, hint: str | None = None) -> RunError:
    """What the data folder holds stops the run (a :class:`RunError` located at the folder)."""
    return RunError([error(message, "--data", Location(str(where)), hint=hint)])


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network's input; saved in checkpoints (``as_dict``)."""

    size: int                       # the square crop fed to the network
    resize: int                     # shorter side before the center crop (evaluation)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    random_resized_crop: bool = True
    min_scale: float = 0.08
    horizontal_flip: bool = True

    @classmethod
    def from_spec(cls, spec: Any) -> Preprocess:
        # a clip network (C x T x H x W) prepares each of its T frames so (training/clips.py)
        c, h, w = (spec.input[0], *spec.input[-2:])
        d = spec.data
        crop = d.crop or h
        where = Location(spec.file)
        if h != w or crop != h:
            raise SpecError([error(f"the network takes {h}x{w}x{c} images but data.crop is {crop}", "data.crop",
                                   where, hint=f"crop to the spec's size (data.crop={h}), or build the network "
                                               f"for {crop}x{crop} with --set input=[{','.join(map(str, spec.input[:-2]))},{crop},{crop}]")])
        if c not in (1, 3):
            raise SpecError([error(f"images have 1 or 3 channels; the spec's input has {c}", "input", where)])
        if len(d.mean) != c or len(d.std) != c:
            raise SpecError([error(f"data.mean and data.std need {c} values, one per channel", "data.mean", where)])
        return cls(size=crop, resize=d.resize or round(crop / 0.875), mean=tuple(d.mean), std=tuple(d.std),
                   interpolation=d.interpolation, random_resized_crop=d.random_resized_crop,
                   min_scale=d.min_scale, horizontal_flip=d.horizontal_flip)

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "the checkpoint", channels: int | None = None,
                  side: tuple[int, int] | None = None) -> Preprocess:
        """The preprocessing a checkpoint (``source``) holds: untrusted data, checked field by field
        (with ``channels`` and ``side``, against the network's input), refused naming the field."""
        from ..modelfile import check_preprocess

        checked = check_preprocess(data, source, channels, side)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in checked.items()})

    # ------------------------------------------------------------------ the transforms
    def resample(self) -> Any:
        from PIL import Image

        return {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[self.interpolation]

    def to_tensor(self, img: Any) -> torch.Tensor:
        channels = len(self.mean)
        img = img.convert("RGB" if channels == 3 else "L")
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        x = data.view(img.height, img.width, channels).permute(2, 0, 1).float().div_(255)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (x - mean) / std

    def evaluation(self, img: Any) -> torch.Tensor:
        """Resize the shorter side to ``resize``, crop the center ``size`` square."""
        w, h = img.size
        scale = self.resize / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        if nw * nh > MAX_RESIZED_PIXELS:     # resize only the part the crop keeps
            sx, sy = w / nw, h / nh
            box = (left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy)
            return self.to_tensor(img.resize((self.size, self.size), self.resample(), box=box))
        img = img.resize((nw, nh), self.resample())
        return self.to_tensor(img.crop((left, top, left + self.size, top + self.size)))

    def random_box(self, w: int, h: int, rng: random.Random) -> tuple[int, int, int, int]:
        """A random crop of ``min_scale``-100% of a w x h image's area, aspect ratio 3/4-4/3 (the central
        square when ten draws do not fit)."""
        area = w * h
        for _ in range(10):
            target = area * rng.uniform(self.min_scale, 1.0)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
                return (left, top, left + cw, top + ch)
        side = min(w, h)
        return ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)

    def training(self, img: Any, rng: random.Random) -> torch.Tensor:
        """A random crop of ``min_scale``-100% of the area and aspect ratio 3/4-4/3, resized to
        ``size``; then a horizontal flip with probability 1/2."""
        from PIL import Image

        if not self.random_resized_crop:
            x = self.evaluation(img)
            return torch.flip(x, dims=[2]) if self.horizontal_flip and rng.random() < 0.5 else x
        img = img.resize((self.size, self.size), self.resample(), box=self.random_box(*img.size, rng))
        if self.horizontal_flip and rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return self.to_tensor(img)


def scan(folder: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folders) and (image path, class index) pairs of an ImageFolder."""
    root = Path(folder)
    if not root.is_dir():
        raise _fail(f"no such folder: {root}", root, hint="--data takes a folder with one sub-folder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    from ..modelfile import has_control

    odd = [c for c in classes if has_control(c)]
    if odd:     # a class name is printed (archc predict) and saved in checkpoints, which refuse such a name
        raise _fail(f"{root} has a class folder whose name holds a control character: {ascii(odd[0])}", root,
                    hint="rename the folder: its name is the class name")
    if not classes:
        loose = sum(1 for p in root.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())
        if loose:
            raise _fail(f"{root} holds {loose:,} image(s) but no class sub-folders", root,
                        hint=f"put each class's images in a sub-folder of its own: {root}/CLASS_A/*.jpg, "
                             f"{root}/CLASS_B/*.jpg (the folder name is the class name)")
    samples = []
    for index, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.suffix.lower() in EXTENSIONS and path.is_file():
                samples.append((path, index))
    return classes, samples


class ImageFolder(torch.utils.data.Dataset):
    """Samples of one split; ``__getitem__`` gives ``(image, label, index)`` or, for an image Pillow
    cannot read, ``(None, label, index)``, which :func:`collate` drops and counts."""

    what = "image"                  # a sample, in messages

    def __init__(self, samples: list[tuple[Path, int]], preprocess: Preprocess, train: bool, seed: int):
        self.samples = samples
        self.preprocess = preprocess
        self.train = train
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, int]:
        path, label = self.samples[index]
        try:
            img = read_image(path)
            if self.train:
                rng = random.Random(hash((self.seed, self.epoch, index)))
                return self.preprocess.training(img, rng), label, index
            return self.preprocess.evaluation(img), label, index
        except (OSError, ValueError, SyntaxError):      # ImageError is a ValueError
            return None, label, index


def collate(batch: list[tuple[torch.Tensor | None, Any, int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Stack the readable images and their labels (class indices or masks); the indices of unreadable
    ones come along, to be counted."""
    good = [(x, y) for x, y, _ in batch if x is not None]
    bad = [i for x, _, i in batch if x is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    labels = [y for _, y in good]         # class indices, or masks (one class index per pixel)
    ys = torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels)
    return torch.stack([x for x, _ in good]), ys, bad


def split(samples: list[tuple[Path, int]], fraction: float, seed: int) -> tuple[list, list]:
    """A validation split of ``fraction`` of every class (at least one image each), chosen by ``seed``."""
    rng = random.Random(seed)
    by_class: dict[int, list] = {}
    for s in samples:
        by_class.setdefault(s[1], []).append(s)
    train, val = [], []
    for label in sorted(by_class):
        items = list(by_class[label])
        rng.shuffle(items)
        k = max(1, round(len(items) * fraction)) if len(items) > 1 else 0
        val += items[:k]
        train += items[k:]
    return sorted(train, key=lambda s: str(s[0])), sorted(val, key=lambda s: str(s[0]))


def refuse_feature_extractor(spec: Any, command: str) -> None:
    """Training, evaluation and prediction need the network's classes: a spec with ``features:`` (a
    feature extractor, which returns maps) is refused at its first feature."""
    if spec.features:
        from ..errors import SpecError, error

        raise SpecError([error(f"{spec.name} is a feature extractor (features:): it gives maps, not classes, so "
                               f"archc {command} cannot use it", "features", spec.features[0].loc,
                               hint="train or evaluate the whole network, then build it with --features")])

