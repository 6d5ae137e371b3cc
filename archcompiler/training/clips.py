"""Video data: clips as folders of frames, one folder of clips per class.

The layout is the one Kinetics, UCF-101 and Something-Something users extract with ffmpeg:
``DATA/CLASS/CLIP/00001.jpg``, ``00002.jpg``, ... (a folder per clip, its frames image files, in the order
of their names: numbers in a name compare as numbers, so ``frame_2`` comes before ``frame_10``). Class
names are the sorted class folders, as for images. Video files (``.mp4``, ``.avi``, ...) need a decoder
archc does not depend on: they are refused, with the ffmpeg command that extracts their frames.

A network whose input is ``[C, T, H, W]`` takes T frames of each clip, spread evenly over the whole clip:
the clip's n frames are cut into T equal segments and one frame taken from each, at the same place in
every segment; that place is random in training (drawn per clip and epoch, as every augmentation) and the
segment's middle in evaluation and prediction. A clip with fewer than T frames is looped (frames 0, 1, 2,
0, 1, ... for three frames and T = 5). Every frame goes through the spec's ``data:`` preprocessing, the
same for all T frames of a clip: in training one random crop and one flip, drawn once per clip; in
evaluation the resize and centre crop. The frames are stacked to C x T x H x W.

A clip whose frames cannot all be read (a corrupt frame, frames of different sizes, no frames) counts as
one unreadable sample, skipped unless ``--strict``. Bounded against untrusted folders: at most
:data:`MAX_FRAMES` files in a clip folder (a clip with more is unreadable), :data:`MAX_CLIPS` clips in a
data folder; only T frames of a clip are decoded.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import torch

from .data import EXTENSIONS, ImageFolder, Preprocess, _fail, read_image

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ogv"}
MAX_FRAMES = 100_000            # files in one clip folder (about an hour at 30 frames per second)
MAX_CLIPS = 2_000_000           # clips in a data folder (Kinetics-700 has about 650,000)


def is_clip_network(spec: Any) -> bool:
    """The network takes clips: its input is C x T x H x W."""
    return len(spec.input) == 4


def extract_hint(video: str | Path = "CLIP.mp4") -> str:
    """The one line that says how to turn a video file into a clip folder archc reads."""
    import shlex

    video = Path(video)
    folder = shlex.quote(str(video.with_suffix("")))
    frames = shlex.quote(str(video.with_suffix("") / "%05d.jpg"))
    return (f"extract its frames into a folder first: mkdir -p {folder} && ffmpeg -i {shlex.quote(str(video))} -q:v 2 "
            f"{frames} (archc reads clips as folders of frames: DIR/CLASS/CLIP/00001.jpg, ...)")


def _name_key(name: str) -> list[Any]:
    """Names in natural order: numbers compare as numbers (``frame_2`` before ``frame_10``)."""
    return [(0, int(part), part) if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def list_frames(clip: str | Path, limit: int = MAX_FRAMES) -> list[Path]:
    """The frames of a clip folder (its image files, in natural order of their names). A folder with more
    than ``limit`` entries is refused (``ValueError``) after reading ``limit + 1`` of them."""
    found = []
    with os.scandir(clip) as entries:
        for n, entry in enumerate(entries):
            if n >= limit:
                raise ValueError(f"{ascii(str(clip))} holds more than {limit:,} files")
            if os.path.splitext(entry.name)[1].lower() in EXTENSIONS and entry.is_file():
                found.append(entry.name)
    return [Path(clip) / name for name in sorted(found, key=_name_key)]


def frame_indices(n: int, t: int, rng: random.Random | None = None) -> list[int]:
    """Which of a clip's ``n`` frames make its ``t``: one from each of ``t`` equal segments, at the same
    place in each (random with ``rng``, in training; the middle without, in evaluation); a clip shorter
    than ``t`` is looped (0, 1, ..., n - 1, 0, 1, ...)."""
    if n <= 0 or t <= 0:
        raise ValueError(f"a clip of {n} frames cannot give {t}")
    if n < t:
        return [k % n for k in range(t)]
    place = rng.random() if rng is not None else 0.5
    return [min(n - 1, int((k + place) * n / t)) for k in range(t)]


def clip_tensor(pre: Preprocess, frames: list[Any], rng: random.Random | None) -> torch.Tensor:
    """Frames (Pillow images of one size) through ``pre``, the same crop and flip for all (drawn from
    ``rng`` in training; the centre crop without), stacked to C x T x H x W."""
    from PIL import Image

    size = frames[0].size
    if any(f.size != size for f in frames):
        raise ValueError("the clip's frames differ in size")
    if rng is None:
        return torch.stack([pre.evaluation(f) for f in frames], dim=1)
    if not pre.random_resized_crop:
        x = torch.stack([pre.evaluation(f) for f in frames], dim=1)
        return torch.flip(x, dims=[3]) if pre.horizontal_flip and rng.random() < 0.5 else x
    box = pre.random_box(*size, rng)
    flip = pre.horizontal_flip and rng.random() < 0.5
    out = []
    for f in frames:
        img = f.resize((pre.size, pre.size), pre.resample(), box=box)
        out.append(pre.to_tensor(img.transpose(Image.FLIP_LEFT_RIGHT) if flip else img))
    return torch.stack(out, dim=1)


def read_clip(clip: str | Path, pre: Preprocess, t: int, rng: random.Random | None = None) -> torch.Tensor:
    """A clip folder as the network's input (C x T x H x W): ``t`` frames chosen by :func:`frame_indices`,
    prepared by :func:`clip_tensor`. ``FileNotFoundError`` for a missing folder; ``ValueError`` (an
    ``ImageError``) for a clip without frames, with too many files or with a frame that cannot be read."""
    frames = list_frames(clip)
    if not frames:
        raise ValueError(f"{ascii(str(clip))} holds no frames (image files: {', '.join(sorted(EXTENSIONS)[:4])} ...)")
    chosen = frame_indices(len(frames), t, rng)
    images = {i: read_image(frames[i]) for i in sorted(set(chosen))}     # a looped frame is read once
    return clip_tensor(pre, [images[i] for i in chosen], rng)


def scan_clips(folder: str | Path, limit: int = MAX_CLIPS) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folders) and (clip folder, class index) pairs of ``DATA/CLASS/CLIP/``.
    Refused, in one line with a hint: video files in a class folder without clip folders, images where
    clip folders belong, more than ``limit`` clips."""
    root = Path(folder)
    classes = _class_folders(root)
    samples: list[tuple[Path, int]] = []
    for index, name in enumerate(classes):
        clips, videos, images = [], [], 0
        with os.scandir(root / name) as entries:
            for entry in entries:
                suffix = os.path.splitext(entry.name)[1].lower()
                if entry.is_dir() and not entry.name.startswith("."):
                    clips.append(entry.name)
                elif suffix in VIDEO_EXTENSIONS:
                    videos.append(entry.name)
                elif suffix in EXTENSIONS:
                    images += 1
                if len(samples) + len(clips) > limit:
                    raise _fail(f"{root} holds more than {limit:,} clips", root,
                                hint="train on a part of it (archc reads at most this many clips)")
        if videos and not clips:
            raise _fail(f"{ascii(str(root / name))} holds {len(videos):,} video file(s) (first "
                        f"{ascii(sorted(videos)[0])}), which archc does not decode", root / name,
                        hint=extract_hint(root / name / sorted(videos)[0]))
        if images and not clips:
            raise _fail(f"{ascii(str(root / name))} holds {images:,} image(s) but no clip folders: the network takes "
                        "clips", root / name, hint=f"put each clip's frames in a folder of its own: "
                        f"{root}/{name}/CLIP/00001.jpg, ...")
        samples += [(root / name / c, index) for c in sorted(clips, key=_name_key)]
    return classes, samples


def _class_folders(root: Path) -> list[str]:
    """The class folders' names, checked as :func:`~.data.scan` checks them."""
    from .data import scan

    if not root.is_dir():
        scan(root)                           # its error: no such folder
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    from ..modelfile import has_control

    odd = [c for c in classes if has_control(c)]
    if odd:
        raise _fail(f"{root} has a class folder whose name holds a control character: {ascii(odd[0])}", root,
                    hint="rename the folder: its name is the class name")
    if not classes:
        videos = sorted(p.name for p in root.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
        if videos:
            raise _fail(f"{root} holds {len(videos):,} video file(s) (first {ascii(videos[0])}) and no class "
                        "folders; archc does not decode video", root, hint=extract_hint(root / "CLASS" / videos[0]))
    return classes


class ClipFolder(ImageFolder):
    """Clips of one split (``samples``: (clip folder, class index)); ``__getitem__`` gives ``(clip, label,
    index)``, the clip C x T x H x W (``frames`` = T), or ``(None, label, index)`` for a clip that cannot be
    read, which :func:`~.data.collate` drops and counts."""

    what = "clip"

    def __init__(self, samples: list[tuple[Path, int]], preprocess: Preprocess, train: bool, seed: int,
                 frames: int = 1):
        super().__init__(samples, preprocess, train, seed)
        self.frames = frames

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, int]:
        path, label = self.samples[index]
        rng = random.Random(hash((self.seed, self.epoch, index))) if self.train else None
        try:
            return read_clip(path, self.preprocess, self.frames, rng), label, index
        except (OSError, ValueError, SyntaxError):      # ImageError is a ValueError
            return None, label, index
