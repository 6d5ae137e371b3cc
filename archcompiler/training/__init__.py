"""Training, evaluation and prediction on folders of images (imports torch, Pillow, matplotlib)."""

from .loop import TrainResult, summary, train
from .predict import evaluate, predict

__all__ = ["train", "evaluate", "predict", "summary", "TrainResult"]
