"""Training, evaluation and prediction on folders of images (imports torch, Pillow, matplotlib)."""

from .console import summary
from .loop import TrainResult, train
from .predict import evaluate, predict

__all__ = ["train", "evaluate", "predict", "summary", "TrainResult"]
