"""What a training run says while it runs: a progress bar per epoch on a terminal, plain lines
elsewhere (a log file, CI), and the summary at its end."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ..util import progress_seconds as util_progress_seconds

# ----------------------------------------------------------------------------- progress

PROGRESS_SECONDS = 10.0     # the longest wait between progress lines when the output is not a terminal


def progress_seconds() -> float:
    """Seconds between two progress lines of an epoch when the output is not a terminal:
    ``PROGRESS_SECONDS`` (10), or the environment's ``ARCHC_PROGRESS_SECONDS`` (util.progress_seconds)."""
    return util_progress_seconds(PROGRESS_SECONDS)


def format_rate(per_second: float) -> str:
    """A speed for people: two significant digits below 100 (``0.31``, ``3.1``, ``12``), whole numbers
    from there (``1234``)."""
    if not math.isfinite(per_second):
        return str(per_second)
    if per_second <= 0:
        return "0"
    if per_second >= 99.5:
        return f"{per_second:.0f}"
    rounded = float(f"{per_second:.2g}")
    return f"{rounded:.{max(0, 1 - math.floor(math.log10(rounded)))}f}"


class Progress:
    """A bar per epoch on a terminal (tqdm). Elsewhere (a log file, CI) plain lines: during an epoch
    one at least every :func:`progress_seconds` (``epoch 1/3: batch 12/40, loss 0.6931, acc 0.512,
    3.1 img/s``), and one at its end."""

    def __init__(self, enabled: bool, stream: Any = None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar: Any = None
        self.epoch = self.epochs = self.batches = self.done = 0
        self.last = 0.0
        self.every = PROGRESS_SECONDS

    def start(self, epoch: int, epochs: int, batches: int) -> None:
        self.epoch, self.epochs, self.batches, self.done = epoch, epochs, batches, 0
        self.last = time.perf_counter()
        self.every = progress_seconds()
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=True, file=self.stream,
                            dynamic_ncols=True)

    def update(self, loss: float, accuracy: float, images_per_s: float) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", img_s=format_rate(images_per_s))
            self.bar.update(1)
        elif self.enabled and self.done < self.batches:        # the epoch's own line follows its last batch
            now = time.perf_counter()
            if now - self.last >= self.every:
                self.last = now
                print(f"epoch {self.epoch}/{self.epochs}: batch {self.done}/{self.batches}, loss {loss:.4f}, "
                      f"acc {accuracy:.3f}, {format_rate(images_per_s)} img/s", file=self.stream, flush=True)

    def end(self, row: dict[str, Any], epochs: int) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            val = f", val acc {row['val_accuracy']:.3f}" if row["val_accuracy"] is not None else ""
            if row.get("val_miou") is not None:
                val += f", val mIoU {row['val_miou']:.3f}"
            print(f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}, acc {row['train_accuracy']:.3f}"
                  f"{val}, lr {row['lr']:.3g}, {format_rate(row['images_per_s'])} img/s, {row['seconds']:.1f} s",
                  file=self.stream, flush=True)


def summary(result: Any, spec_name: str) -> str:
    """The one-screen summary at the end of a run (``result``: a :class:`~.loop.TrainResult`)."""
    h = result.history
    lines = [f"{spec_name}: {len(h)} epoch(s) on {len(result.classes)} classes ({', '.join(result.classes[:8])})"]
    if result.frozen:
        lines.append(f"parameters: {result.trainable:,} of {result.parameters:,} train "
                     f"(frozen: everything up to and including {result.frozen}"
                     f"{', except the new heads ' + ', '.join(result.spared) if result.spared else ''})")
    if h:
        last = h[-1]
        lines.append(f"last epoch: train loss {last['train_loss']:.4f}, train accuracy {last['train_accuracy']:.3f}"
                     + (f", validation accuracy {last['val_accuracy']:.3f}" if last["val_accuracy"] is not None else ""))
        lines.append(f"speed: {format_rate(sum(r['images_per_s'] for r in h) / len(h))} images/s; "
                     f"time: {sum(r['seconds'] for r in h):.1f} s")
    if result.best and result.best.get("val_miou") is not None:
        lines.append(f"best: validation mean IoU {result.best['val_miou']:.3f} (pixel accuracy "
                     f"{result.best['val_accuracy']:.3f}) at epoch {result.best['epoch']}")
    elif result.best:
        lines.append(f"best: validation accuracy {result.best['val_accuracy']:.3f} at epoch {result.best['epoch']}")
    if result.stopped:
        lines.append(f"early stopping: validation accuracy did not improve for {result.stopped['patience']} "
                     f"epoch(s); stopped after epoch {result.stopped['epoch']} of {result.epochs}")
    lines.append(f"unreadable images skipped: {result.skipped}" if result.skipped else "unreadable images: none")
    if result.run_dir is not None:
        names = [n for n in ("metrics.csv", "curves.png", "last.pt", "best.pt", "last.safetensors",
                             "best.safetensors", "tensorboard/") if (result.run_dir / n).exists()]
        lines.append(f"run folder: {result.run_dir} ({', '.join(names)})")
    return "\n".join(lines)
