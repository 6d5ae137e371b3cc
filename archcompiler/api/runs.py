"""Training, evaluation and prediction on folders of images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..options import TrainOptions

if TYPE_CHECKING:
    from ..spec import Spec


def train(spec_or_path: Spec | str | Path, data: str | Path, options: TrainOptions | None = None, *,
          overrides: dict | list | None = None) -> Any:
    """Train on an image folder (one sub-folder per class) with the spec's recipe (``archc train``).

    Args:
        spec_or_path: a spec, its file, or a zoo name.
        data: the training images, one sub-folder per class; for a segmentation network (its main output a
            map), ``data/images/NAME.jpg`` and ``data/masks/NAME.png`` (class indices, 255 not labelled;
            ``data/classes.txt`` may name the classes).
        options: the run's options (:class:`TrainOptions`, ``archc train``'s flags: validation, epochs,
            batch size, learning rate, seed, device, run folder, resume, weights, freeze, patience, ...);
            default: the recipe as the spec says it, a new run folder ``runs/<name>-N``.
        overrides: ``--set`` values.

    Returns:
        a result with ``.model`` (trained, in eval mode), ``.history`` (one dict per epoch),
        ``.run_dir``, ``.classes``, ``.best`` and ``.new_heads``.

    Raises:
        :class:`SpecError` for the spec or the arguments, :class:`RunError` for what the run meets (no CUDA,
        an empty folder, a run folder to resume).

    Example::

        result = archcompiler.train("googlenet-small", "digits/", TrainOptions(epochs=3),
                                    overrides={"num_classes": 10})
    """
    from ..training import train as _train

    return _train(spec_or_path, data, options, overrides=overrides)


def resume_arguments(run_dir: str | Path | None, given: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """What ``archc train --resume`` trains with: the arguments a run folder's ``args.json`` recorded
    (``spec``, ``data``, ``overrides`` and :class:`TrainOptions`' fields), each one in ``given`` (not
    None) overriding its recorded value; and those overrides in words (``--epochs 5 (was 3)``).

    Args:
        run_dir: the run folder; None: the latest ``runs/NAME-N`` of ``given["spec"]``.
        given: the arguments given again, by name (``{"epochs": 5, "overrides": ["train.lr=0.01"]}``).

    Example::

        kw, changes = archcompiler.resume_arguments("runs/digits", {"epochs": 5})
        archcompiler.train(kw["spec"], kw["data"], TrainOptions.from_given(kw).replace(resume=True),
                           overrides=kw["overrides"])
    """
    from ..training.run import resume_arguments as _resume

    return _resume(run_dir, given)


def train_summary(result: Any) -> str:
    """The summary ``archc train`` prints at the end of a run: epochs, classes, the last epoch's loss and
    accuracy, speed, the best checkpoint (``result``: what :func:`train` returned).

    Example::

        print(archcompiler.train_summary(archcompiler.train("googlenet-small", "digits/")))
    """
    from ..backends.torch import archc_info
    from ..training import summary

    return summary(result, archc_info(result.model).name)


def evaluate(spec_or_checkpoint: Spec | str | Path, data: str | Path, *, weights: str | Path | None = None,
             overrides: dict | list | None = None, device: str = "cpu", batch_size: int = 64,
             plot: str | Path | None = None, pretrained: bool = False) -> dict[str, Any]:
    """Accuracy, per-class accuracy and the confusion matrix on an image folder (``archc evaluate``).

    Args:
        spec_or_checkpoint: a checkpoint (``runs/NAME/best.pt``, which holds its spec), or a spec with
            ``weights``; ``pretrained=True`` (or ``weights`` a name or URL): a builder's published weights.
        data: one sub-folder per class, named as in training.
        plot: also draw the confusion matrix to this PNG file.

    A segmentation network is evaluated on ``data/images`` and ``data/masks`` (see :func:`train`): over the
    labelled pixels, with ``miou`` (the mean intersection over union of the classes that occur or are
    predicted), ``iou`` per class and ``pixels``.

    Returns:
        ``spec``, ``images``, ``skipped``, ``accuracy``, ``per_class_accuracy``, ``classes``, ``confusion``
        (rows: the true class); with published weights of more categories than the folder's, ``other`` (the
        images taken for a category outside them); with ``plot``, ``plot``.

    Example::

        archcompiler.evaluate("runs/digits/best.pt", "digits/")["accuracy"]
    """
    from ..training import evaluate as _evaluate

    return _evaluate(spec_or_checkpoint, data, weights=weights, overrides=overrides, device=device,
                     batch_size=batch_size, plot=plot, pretrained=pretrained)


def is_published(weights: str | Path | None, pretrained: bool = False) -> bool:
    """Whether ``weights`` (with ``pretrained``) name published weights (``IMAGENET1K_V1``, ``DEFAULT``, a URL)
    rather than a file of the user's, as :func:`evaluate` and :func:`predict` take them.

    Example::

        archcompiler.is_published("IMAGENET1K_V1")      # True
    """
    from ..pretrained import is_url, is_weights_name

    return bool(pretrained or is_url(weights) or is_weights_name(weights))


def predict(spec_or_checkpoint: Spec | str | Path, images: list[str | Path], *, weights: str | Path | None = None,
            overrides: dict | list | None = None, top: int = 5, device: str = "cpu",
            pretrained: bool = False, masks: str | Path = "masks") -> list[dict[str, Any]]:
    """The ``top`` classes of each image with their probabilities (``archc predict``), the images prepared
    as in training.

    Args:
        spec_or_checkpoint, weights, pretrained: as :func:`evaluate` (published weights come with their
            category names).
        images: image files.
        masks: for a segmentation network, the folder its predicted masks go to (``masks/NAME.png``, a
            palette PNG of class indices in Pascal VOC's colours, the image's size).

    Returns:
        one dict per image: ``image`` and ``top`` (``[{"class": name, "probability": p}, ...]``, the most
        probable first); for a segmentation network ``image``, ``mask`` (the file written) and ``classes``
        (the share of the image each predicted class covers).

    Example::

        archcompiler.predict("resnet50", ["cat.jpg"], pretrained=True)
    """
    from ..training import predict as _predict

    return _predict(spec_or_checkpoint, images, weights=weights, overrides=overrides, top=top, device=device,
                    pretrained=pretrained, masks=masks)
