"""``archc evaluate`` and ``archc predict``: a trained checkpoint on a folder or on single images.

A checkpoint written by ``archc train`` carries its spec, the class names and the preprocessing it
was trained with, so images are prepared exactly as in training. A plain ``state_dict`` (a
published checkpoint) works too: the spec's ``data:`` section says how to prepare images, and
class names come from the folder (or are numbered). Published weights by name (``--pretrained``,
``--weights IMAGENET1K_V1``; see :mod:`archcompiler.pretrained`) bring their own preprocessing and
category names.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import Location, RunError, SpecError, error
from ..spec import Spec, load_spec
from .clips import ClipFolder, is_clip_network, scan_clips
from .data import ImageError, ImageFolder, Preprocess, collate, read_image, refuse_feature_extractor, scan
from .masks import MaskFolder, scan_masks


def load_trained(spec_or_checkpoint: Spec | str | Path, weights: str | Path | None = None,
                 overrides: dict | list | None = None, device: str = "cpu",
                 pretrained: bool = False) -> tuple[Any, Spec, list[str] | None, Preprocess]:
    """The trained module, its spec, its class names (if the checkpoint has them) and preprocessing.
    Every tensor must fit: a classifier of another class count is an error here, not a new head.
    ``pretrained`` (or ``weights`` a name such as ``IMAGENET1K_V1``, or a URL): torchvision's
    published weights of the builder, with their preprocessing and category names."""
    from ..backends.torch import Weights, build
    from ..backends.torch.weights import has_training_heads
    from ..modelfile import check_classes, is_model_file, read_weights
    from ..modelspec import embedded_spec
    from ..pretrained import resolve

    published = resolve(spec_or_checkpoint, weights, pretrained, overrides)
    weights, overrides = published.weights, published.overrides
    if weights is None:
        if not is_model_file(spec_or_checkpoint):
            raise SpecError([error("which weights? give --weights CHECKPOINT (or a checkpoint instead of SPEC)",
                                   "--weights", hint="archc train writes runs/NAME/best.pt and best.safetensors")])
        mf = read_weights(spec_or_checkpoint, what="SPEC")
        if mf.spec is None:
            raise SpecError([error(f"{spec_or_checkpoint} holds weights but no spec", "SPEC",
                                   Location(str(spec_or_checkpoint)), hint="give the spec and --weights FILE")])
        spec = embedded_spec(mf, overrides, file=str(spec_or_checkpoint))
    else:
        mf = read_weights(weights)              # published weights: with their category names and preprocessing
        spec = load_spec(spec_or_checkpoint, overrides)
    refuse_feature_extractor(spec, "evaluate or predict")
    heads = mf.heads if mf.heads is not None else has_training_heads(spec, mf.state_dict)
    model = build(spec, weights=Weights(mf, new_heads=False), heads=heads)
    model.to(torch.device(device)).eval()
    # what the checkpoint says besides its tensors must fit the network: one name per output, one
    # mean and std per input channel, images of the input's size
    check_classes(mf.classes, mf.label, class_count(spec))
    c, h, w = (spec.input[0], *spec.input[-2:])         # a clip network's: its frames'
    pre = (Preprocess.from_dict(mf.preprocess, mf.label, channels=c, side=(h, w)) if mf.preprocess
           else Preprocess.from_spec(spec))
    return model, spec, mf.classes, pre


def class_count(spec: Spec) -> int:
    """How many classes the network tells apart: its main output's size (two for one sigmoid unit)."""
    import math

    from ..ir import lower
    from ..passes import infer_shapes

    g = lower(spec)
    infer_shapes(g)
    main = next(v for v in g.graph["outputs"].values() if not v["training_only"])
    shape = g.nodes[main["node"]]["shape"]
    n = shape[0] if len(shape) == 3 else math.prod(shape)        # a segmentation map: its channels
    return 2 if n == 1 else n


def evaluate(spec_or_checkpoint: Spec | str | Path, data: str | Path, weights: str | Path | None = None,
             overrides: dict | list | None = None, device: str = "cpu", batch_size: int = 64,
             plot: str | Path | None = None, pretrained: bool = False) -> dict[str, Any]:
    """Accuracy, per-class accuracy and the confusion matrix of a trained network on an image folder
    (``plot``: also draw the confusion matrix to that PNG file; ``pretrained``: as :func:`load_trained`)."""
    from ..pretrained import is_url, is_weights_name
    from .loop import evaluate_loader, main_shape

    model, spec, classes, pre = load_trained(spec_or_checkpoint, weights, overrides, device, pretrained)
    shape = main_shape(spec)
    if len(shape) == 3:
        return _evaluate_masks(model, spec, classes, pre, data, (device, batch_size), plot)
    clips = is_clip_network(spec)               # DATA/CLASS/CLIP/frames (training/clips.py)
    folder_classes, samples = (scan_clips if clips else scan)(data)
    classes = classes or folder_classes
    unknown = [c for c in folder_classes if c not in classes]
    if unknown:
        known = ", ".join(classes[:20]) + (f", ... ({len(classes)} in all)" if len(classes) > 20 else "")
        raise RunError([error(f"the folder has classes the model was not trained on: {', '.join(unknown)}",
                               "--data", Location(str(data)), hint=f"the model knows: {known}")])
    if not samples:
        raise RunError([error(f"no {'clips' if clips else 'images'} in {data}", "--data", Location(str(data)))])
    index = {c: i for i, c in enumerate(classes)}
    samples = [(p, index[folder_classes[label]]) for p, label in samples]
    dataset = ClipFolder(samples, pre, train=False, seed=0, frames=spec.input[1]) if clips else \
        ImageFolder(samples, pre, train=False, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    result = evaluate_loader(model, loader, torch.device(device), len(classes))
    confusion = result["confusion"]
    per_class = _per_class_accuracy(confusion, classes)
    report = {"spec": spec.name, "images": result["count"], "skipped": result["skipped"],
              "accuracy": result["accuracy"], "per_class_accuracy": per_class, "classes": classes,
              "confusion": confusion.tolist()}
    if clips:                                   # "images" counts the clips (the key the text output reads)
        report["clips"] = result["count"]
    if (pretrained or is_url(weights) or is_weights_name(weights)) and len(classes) > len(folder_classes):
        # published weights know many categories (ImageNet's 1000): the folder's alone are reported,
        # and how many images were taken for a category outside them
        rows = [index[c] for c in folder_classes]
        confusion = confusion[rows][:, rows]
        classes = list(folder_classes)
        report.update(classes=classes, per_class_accuracy={c: per_class[c] for c in classes},
                      confusion=confusion.tolist(), other=int(result["count"] - confusion.sum().item()))
    if plot is not None:
        plot_confusion(Path(plot), classes, confusion, f"{spec.name}: accuracy {result['accuracy']:.3f}")
        report["plot"] = str(plot)
    return report


def _evaluate_masks(model: Any, spec: Spec, classes: list[str] | None, pre: Preprocess, data: str | Path,
                    batches: tuple[str, int], plot: str | Path | None) -> dict[str, Any]:
    """A segmentation network on images and masks (``batches``: the device and the batch size): pixel
    accuracy, each class's IoU and their mean."""
    from .loop import evaluate_loader, main_shape

    n = main_shape(spec)[0]
    names, pairs = scan_masks(data, n)
    classes = classes or names
    if not pairs:
        raise RunError([error(f"no images in {Path(data) / 'images'}", "--data", Location(str(data)))])
    device, batch_size = batches
    loader = torch.utils.data.DataLoader(MaskFolder(pairs, pre, train=False, seed=0), batch_size=batch_size,
                                         collate_fn=collate)
    result = evaluate_loader(model, loader, torch.device(device), n)
    confusion = result["confusion"]
    per_class = _per_class_accuracy(confusion, classes)
    report = {"spec": spec.name, "images": result["count"], "skipped": result["skipped"],
              "pixels": result.get("pixels", 0), "accuracy": result["accuracy"], "miou": result.get("miou"),
              "iou": dict(zip(classes, result.get("iou", []))), "per_class_accuracy": per_class,
              "classes": classes, "confusion": confusion.tolist()}
    if plot is not None:
        plot_confusion(Path(plot), classes, confusion, f"{spec.name}: pixel accuracy {result['accuracy']:.3f}")
        report["plot"] = str(plot)
    return report


def _per_class_accuracy(confusion: torch.Tensor, classes: list[str]) -> dict[str, float | None]:
    """Each class's share of its own images (or labelled pixels) predicted as it; None for a class absent."""
    return {c: (confusion[i, i].item() / confusion[i].sum().item()) if confusion[i].sum() else None
            for i, c in enumerate(classes)}


def plot_confusion(path: Path, classes: list[str], confusion: torch.Tensor, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    n = len(classes)
    fig, ax = plt.subplots(figsize=(2 + 0.6 * n, 1.6 + 0.6 * n))
    ax.imshow(confusion.numpy() if hasattr(confusion, "numpy") else confusion, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = confusion.max().item() if n else 0
    for i in range(n):
        for j in range(n):
            v = confusion[i, j].item()
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def predict(spec_or_checkpoint: Spec | str | Path, images: list[str | Path], weights: str | Path | None = None,
            overrides: dict | list | None = None, top: int = 5, device: str = "cpu",
            pretrained: bool = False, masks: str | Path = "masks") -> list[dict[str, Any]]:
    """The ``top`` classes with their probabilities for each image, prepared as in training
    (``pretrained``: as :func:`load_trained`, with the weights' category names); for a segmentation
    network, each image's predicted mask, written as a coloured PNG into the folder ``masks``."""
    model, spec, classes, pre = load_trained(spec_or_checkpoint, weights, overrides, device, pretrained)
    from .loop import main_shape

    dense = len(main_shape(spec)) == 3
    if is_clip_network(spec):
        return _predict_clips(model, spec, classes, pre, images, top, device)
    results = []
    for path in images:
        try:
            img = read_image(path, note=lambda line: print(f"archc: {line}", file=sys.stderr, flush=True))
            # a mask covers the whole image: resized, not cropped
            x = (pre.to_tensor(img.resize((pre.size, pre.size), pre.resample())) if dense
                 else pre.evaluation(img)).unsqueeze(0)
        except FileNotFoundError:
            raise RunError([error(f"no such image: {path}", "IMAGE", Location(str(path)))]) from None
        except ImageError as exc:
            raise RunError([error(str(exc), "IMAGE", Location(str(path)))]) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise RunError([error(f"cannot read {path} as an image: {exc}", "IMAGE", Location(str(path)))]) from None
        if dense:
            results.append(_predict_mask(model, x.to(torch.device(device)), path, img.size, classes, masks))
            continue
        results.append({"image": str(path), "top": _top(model, x.to(torch.device(device)), classes, top)})
    return results


def _top(model: Any, x: torch.Tensor, classes: list[str] | None, top: int) -> list[dict[str, Any]]:
    """The ``top`` classes of one input (a batch of one) with their probabilities."""
    probs = model.predict_proba(x)[0]
    if probs.numel() == 1:            # one sigmoid unit: P(class 1)
        probs = torch.cat([1 - torch.sigmoid(probs), torch.sigmoid(probs)])
    names = classes or [str(i) for i in range(probs.numel())]
    values, idx = probs.topk(min(top, probs.numel()))
    return [{"class": names[i], "probability": float(v)} for v, i in zip(values.tolist(), idx.tolist())]


def _predict_clips(model: Any, spec: Spec, classes: list[str] | None, pre: Preprocess, clips: list[str | Path],
                   top: int, device: str) -> list[dict[str, Any]]:
    """The top classes of each clip folder (its frames chosen and prepared as in evaluation); a video
    file, or a missing or unreadable clip, is refused naming it. Each result's ``image`` and ``clip``
    name the folder."""
    from ..errors import printable
    from .clips import MAX_CLIPS, VIDEO_EXTENSIONS, extract_hint, read_clip

    if len(clips) > MAX_CLIPS:
        raise RunError([error(f"{len(clips):,} clips given; archc predicts at most {MAX_CLIPS:,} at once", "CLIP")])
    results = []
    for path in clips:
        shown = printable(str(path))
        if Path(path).suffix.lower() in VIDEO_EXTENSIONS and not Path(path).is_dir():
            raise RunError([error(f"{shown} is a video file, which archc does not decode", "CLIP", Location(shown),
                                   hint=extract_hint(path))])
        if not Path(path).is_dir():
            what = "no such clip folder" if not Path(path).exists() else "not a clip folder (a folder of frames)"
            raise RunError([error(f"{what}: {shown}", "CLIP", Location(shown),
                                   hint="a clip network predicts on folders of frames: CLIP/00001.jpg, ...")])
        try:
            x = read_clip(path, pre, spec.input[1]).unsqueeze(0)
        except (OSError, ValueError, SyntaxError) as exc:      # ImageError is a ValueError
            text = printable(str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__)
            raise RunError([error(f"cannot read the clip {shown}: {text}", "CLIP", Location(shown))]) from None
        results.append({"image": str(path), "clip": str(path), "top": _top(model, x.to(torch.device(device)),
                                                                            classes, top)})
    return results


def _predict_mask(model: Any, x: torch.Tensor, path: str | Path, size: tuple[int, int], classes: list[str] | None,
                  masks: str | Path) -> dict[str, Any]:
    """One image's predicted mask (the network's map of class indices, resized to the image), written as
    ``masks/NAME.png``, and the share of the image each class covers."""
    from .loop import main_output
    from .masks import write_mask

    with torch.no_grad():
        logits = main_output(model.eval()(x))
    predicted = (logits[0, 0] > 0).long() if logits.shape[1] == 1 else logits[0].argmax(0)
    names = classes or [str(i) for i in range(max(logits.shape[1], 2))]
    counts = torch.bincount(predicted.flatten().cpu(), minlength=len(names))
    total = counts.sum().item()
    folder = Path(masks)
    folder.mkdir(parents=True, exist_ok=True)
    written = write_mask(folder / f"{Path(path).stem}.png", predicted.cpu(), size)
    return {"image": str(path), "mask": str(written),
            "classes": {names[i]: counts[i].item() / total for i in range(len(names)) if counts[i]}}
