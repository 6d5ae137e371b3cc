"""Video, step two (issue #34; training/clips.py): a clip network trains, evaluates and predicts on folders of
frames, DATA/CLASS/CLIP/00001.jpg, ... Clips of a square moving (class "moving") or standing still
(class "still"), 8 frames of 32 x 32, made here with Pillow; a tiny network of conv3d, batch norm, the pool and a
linear layer. The frames chosen for T (evenly spread, random place in training, the middle in evaluation,
short clips looped), video files refused with ffmpeg's command, --resume of a clip run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import run_archc

torch = pytest.importorskip("torch")

import archcompiler  # noqa: E402
from archcompiler import RunError  # noqa: E402
from archcompiler.training.clips import ClipFolder, clip_tensor, frame_indices, list_frames, read_clip, scan_clips  # noqa: E402
from archcompiler.training.data import Preprocess  # noqa: E402

SPEC = """name: tiny_clip
input: [3, 4, 32, 32]
layers:
  - {name: conv1, op: conv3d, out: 16, kernel: 3, padding: 1, norm: batch_norm, act: relu}
  - {name: pool, op: global_avg_pool3d}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 2}
train: {optimizer: adam, lr: 0.01, epochs: 4, batch_size: 8, schedule: none, seed: 0}
data: {random_resized_crop: false}
"""


def make_clips(root: Path, per_class: int, seed: int, frames: int = 8) -> Path:
    """``root/moving/CLIP/`` and ``root/still/CLIP/``: a bright square moving 3 pixels a frame across or
    down a dark 32 x 32 frame from a random place, or standing still there; frames 00001.png, ... (only
    the frames' differences tell the classes apart; a flip keeps them)."""
    from PIL import Image, ImageDraw

    r = random.Random(seed)
    for label in ("moving", "still"):
        for c in range(per_class):
            clip = root / label / f"clip{c:03d}"
            clip.mkdir(parents=True)
            x, y, grey = r.randint(0, 8), r.randint(0, 8), r.randint(0, 40)
            across = r.random() < 0.5
            for f in range(frames):
                img = Image.new("RGB", (32, 32), (grey,) * 3)
                step = 3 * f if label == "moving" else 0
                dx, dy = (step, 0) if across else (0, step)
                ImageDraw.Draw(img).rectangle([x + dx, y + dy, x + dx + 7, y + dy + 7], fill=(230, 230, 230))
                img.save(clip / f"{f + 1:05d}.png")
    return root


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("clips")
    make_clips(base / "train", 32, 0)
    make_clips(base / "val", 8, 1)
    (base / "clip.yaml").write_text(SPEC)
    return base


@pytest.fixture(scope="module")
def trained(clips, tmp_path_factory) -> tuple[Path, object]:
    """A run of four epochs through the command line, in a fresh process."""
    run = tmp_path_factory.mktemp("run") / "run"
    result = run_archc("train", str(clips / "clip.yaml"), "--data", str(clips / "train"), "--val", str(clips / "val"),
                       "--workers", "0", "--out", str(run), "-q")
    return run, result


# ----------------------------------------------------------------------------- the frames chosen

def test_t_frames_are_spread_evenly_the_middle_of_each_segment_in_evaluation():
    assert frame_indices(8, 4) == [1, 3, 5, 7]               # segments 0-1, 2-3, 4-5, 6-7: their middles
    assert frame_indices(16, 4) == [2, 6, 10, 14]
    assert frame_indices(4, 4) == [0, 1, 2, 3]
    assert frame_indices(300, 16)[0] == 9 and frame_indices(300, 16)[-1] == 290


def test_in_training_the_place_in_the_segments_is_random_the_spacing_even():
    seen = set()
    for seed in range(40):
        idx = frame_indices(16, 4, random.Random(seed))
        assert [b - a for a, b in zip(idx, idx[1:])] == [4, 4, 4]     # one place, every segment
        assert 0 <= idx[0] <= 3
        seen.add(idx[0])
    assert seen == {0, 1, 2, 3}


def test_a_clip_shorter_than_t_is_looped():
    assert frame_indices(3, 5) == [0, 1, 2, 0, 1]
    assert frame_indices(1, 4, random.Random(0)) == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        frame_indices(0, 4)


def test_frames_in_the_order_of_their_names_numbers_as_numbers(tmp_path):
    for name in ("frame_10.jpg", "frame_2.jpg", "frame_1.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_frames(tmp_path)] == ["frame_1.jpg", "frame_2.jpg", "frame_10.jpg"]
    with pytest.raises(ValueError, match="more than 3 files"):
        list_frames(tmp_path, limit=3)


def test_one_crop_and_flip_for_every_frame_of_a_clip():
    """In training, every frame of a clip is cropped at the same place and flipped (or not) together."""
    from PIL import Image

    pre = Preprocess(size=16, resize=18, mean=(0.0,) * 3, std=(1.0,) * 3)
    frame = Image.effect_noise((32, 32), 64).convert("RGB")
    for seed in range(6):
        x = clip_tensor(pre, [frame] * 3, random.Random(seed))
        assert x.shape == (3, 3, 16, 16)
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    x = clip_tensor(pre, [frame, frame.transpose(Image.FLIP_LEFT_RIGHT)], None)    # evaluation: centre crop
    assert torch.equal(x[:, 0], x[:, 1].flip(-1))


def test_a_clip_is_c_by_t_by_h_by_w_and_an_unreadable_one_is_counted(clips, tmp_path):
    pre = Preprocess.from_spec(archcompiler.load_spec(str(clips / "clip.yaml")))
    classes, samples = scan_clips(clips / "train")
    assert classes == ["moving", "still"] and len(samples) == 64 and samples[0][0].name == "clip000"
    x = read_clip(samples[0][0], pre, 4)
    assert x.shape == (3, 4, 32, 32)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "00001.jpg").write_bytes(b"not a jpeg")
    empty = tmp_path / "empty"
    empty.mkdir()
    data = ClipFolder([(samples[0][0], 0), (bad, 1), (empty, 1)], pre, train=True, seed=0, frames=4)
    assert data[0][0].shape == (3, 4, 32, 32) and data[1][0] is None and data[2][0] is None


# ----------------------------------------------------------------------------- what is refused

def test_video_files_are_refused_with_the_ffmpeg_command(tmp_path):
    (tmp_path / "data" / "juggling").mkdir(parents=True)
    (tmp_path / "data" / "juggling" / "v_001.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(RunError) as info:
        scan_clips(tmp_path / "data")
    problem = info.value.errors[0]
    assert "video file" in problem.message and "ffmpeg -i" in problem.hint and "%05d.jpg" in problem.hint
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "a.avi").write_bytes(b"")
    with pytest.raises(RunError, match="video file"):
        scan_clips(tmp_path / "loose")


def test_images_where_clip_folders_belong_are_refused(tmp_path):
    from PIL import Image

    (tmp_path / "cats").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cats" / "a.png")
    with pytest.raises(RunError) as info:
        scan_clips(tmp_path)
    assert "no clip folders" in info.value.errors[0].message and "CLIP/00001.jpg" in info.value.errors[0].hint


def test_too_many_clips_are_refused(clips):
    with pytest.raises(RunError, match="more than 10 clips"):
        scan_clips(clips / "train", limit=10)


def test_a_control_character_in_a_clip_name_is_escaped(tmp_path):
    (tmp_path / "b" / "dogs").mkdir(parents=True)
    (tmp_path / "b" / "dogs" / "y\x1b[31m.mkv").write_bytes(b"")
    with pytest.raises(RunError) as info:
        scan_clips(tmp_path / "b")
    assert "\x1b" not in str(info.value)


# ----------------------------------------------------------------------------- through the command line

def test_a_clip_network_trains_above_chance_and_evaluates_and_predicts(trained, clips, tmp_path):
    run, result = trained
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5
    val_accuracy = [float(r.split(",")[4]) for r in rows[1:]]
    assert max(val_accuracy) >= 0.75, rows              # chance is 0.5 (8 clips a class)

    report = run_archc("evaluate", str(run / "best.pt"), "--data", str(clips / "val"), "--format", "json",
                       "--plot", "none")
    assert report.returncode == 0, report.stderr[-3000:]
    got = json.loads(report.stdout)
    assert got["clips"] == 16 and got["images"] == 16 and got["skipped"] == 0
    assert got["accuracy"] >= 0.75 and set(got["per_class_accuracy"]) == {"moving", "still"}
    assert sum(map(sum, got["confusion"])) == 16

    across, down = clips / "val" / "moving" / "clip000", clips / "val" / "still" / "clip001"
    predicted = run_archc("predict", str(run / "best.pt"), str(across), str(down), "--top", "2", "--format", "json")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    out = json.loads(predicted.stdout)
    assert [r["clip"] for r in out] == [str(across), str(down)]
    assert all(len(r["top"]) == 2 and abs(sum(t["probability"] for t in r["top"]) - 1) < 1e-5 for r in out)


def test_predict_refuses_a_video_file_and_an_image(trained, clips, tmp_path):
    from archcompiler.api import predict

    run, result = trained
    assert result.returncode == 0, result.stderr[-3000:]
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00" * 16)
    with pytest.raises(RunError) as info:
        predict(run / "best.pt", [video])
    assert "video file" in info.value.errors[0].message and "ffmpeg -i" in info.value.errors[0].hint
    with pytest.raises(RunError, match="not a clip folder"):
        predict(run / "best.pt", [clips / "val" / "still" / "clip000" / "00001.png"])
    with pytest.raises(RunError, match="no such clip folder"):
        predict(run / "best.pt", [tmp_path / "nothing"])
    assert predict(run / "best.pt", [clips / "val" / "still" / "clip000"], top=1)[0]["top"][0]["class"] in \
        ("moving", "still")


@pytest.mark.slow
def test_a_clip_run_resumes(clips, tmp_path):
    out = tmp_path / "run"
    first = run_archc("train", str(clips / "clip.yaml"), "--data", str(clips / "train"), "--val-split", "0.25",
                      "--epochs", "1", "--workers", "0", "--out", str(out), "-q")
    assert first.returncode == 0, first.stderr[-3000:]
    more = run_archc("train", "--out", str(out), "--resume", "--epochs", "2", "--workers", "0", "-q")
    assert more.returncode == 0, more.stderr[-3000:]
    assert "--epochs 2 (was 1)" in more.stderr
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]


@pytest.mark.slow
def test_strict_stops_at_an_unreadable_clip(clips, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(clips / "train", data)
    (data / "still" / "broken").mkdir()
    (data / "still" / "broken" / "00001.jpg").write_bytes(b"not a jpeg")
    strict = run_archc("train", str(clips / "clip.yaml"), "--data", str(data), "--epochs", "1", "--workers", "0",
                       "--strict", "--out", str(tmp_path / "run"), "-q")
    assert strict.returncode != 0 and "unreadable clip" in strict.stderr and "broken" in strict.stderr
    skipped = run_archc("train", str(clips / "clip.yaml"), "--data", str(data), "--epochs", "1", "--workers", "0",
                        "--out", str(tmp_path / "run2"))
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "skipped: 1" in skipped.stderr or "skipped: 1" in skipped.stdout
