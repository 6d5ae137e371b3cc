"""What `train` and `evaluate` say about the data folder and where they put what they draw (quick: a
built model file, no training)."""

from __future__ import annotations

import contextlib
import io

import pytest
from conftest import SPECS
from PIL import Image

import archcompiler
from archcompiler.cli import main


def archc(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue() + err.getvalue()


def _images(folder, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (16, 16), (i * 40 % 255, 0, 0)).save(folder / f"{i}.png")


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_folder_of_loose_images_says_how_many_and_how_to_lay_them_out(command, tmp_path):
    _images(tmp_path / "photos", 5)
    args = {"train": ["train", str(SPECS / "googlenet-small.yaml"), "--epochs", "1", "--out", str(tmp_path / "run")],
            "evaluate": ["evaluate", str(SPECS / "googlenet-small.yaml"), "--weights", str(tmp_path / "none.pt")]}
    model = tmp_path / "m.pt"
    if command == "evaluate":
        archcompiler.save_model(archcompiler.build(SPECS / "googlenet-small.yaml", seed=0), model)
        args["evaluate"] = ["evaluate", str(model)]
    code, text = archc(*args[command], "--data", str(tmp_path / "photos"))
    assert code == 1 and "holds 5 image(s) but no class sub-folders" in text, text
    assert "CLASS_A" in text and "internal error" not in text


def test_evaluate_draws_the_confusion_matrix_beside_the_checkpoint_and_says_where(tmp_path, monkeypatch):
    for c in ("a", "b"):
        _images(tmp_path / "data" / c, 2)
    model = tmp_path / "run" / "model.pt"
    archcompiler.save_model(archcompiler.build(SPECS / "googlenet-small.yaml", ["num_classes=2"], seed=0), model)
    monkeypatch.chdir(tmp_path)
    code, text = archc("evaluate", str(model), "--data", str(tmp_path / "data"))
    assert code == 0, text
    assert (tmp_path / "run" / "confusion.png").exists() and not (tmp_path / "confusion.png").exists()
    assert f"wrote {tmp_path / 'run' / 'confusion.png'}" in text
    code, text = archc("evaluate", str(model), "--data", str(tmp_path / "data"), "--plot", "none")
    assert code == 0 and "wrote" not in text
