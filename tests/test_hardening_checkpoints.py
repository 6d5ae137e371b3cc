"""Hostile checkpoints and images (issue 30; issue 31's count of tensors that do not fit).

A checkpoint's metadata (the spec, the class names, the preprocessing), its zip records and the
images given to ``archc predict`` are data from anyone: each hostile file is made here, cheaply, and
the CLI must refuse it with exit 1 and one line that names the file and the field (never exit 3,
never a traceback), leaving the file as it was. Each case the issue reproduced runs the real CLI in a
fresh process (its memory capped); their variants run the CLI's ``main`` in this process.

The network is tests/data/digits-cnn.yaml (16x16 grayscale): a checkpoint of it is a few hundred KB.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import resource
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from conftest import DATA, ROOT, SPECS

CNN = DATA / "digits-cnn.yaml"
MiB = 1024 * 1024


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_limited(*args) -> subprocess.CompletedProcess:
    """:func:`conftest.run_archc` with the process's data (heap and anonymous mappings, not the
    libraries it maps) capped at 4 GiB: were a bound to go, the allocation it let through would
    fail (exit 3, a failed test) rather than take the machine's memory."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (4 * 1024 * MiB, 4 * 1024 * MiB))

    return subprocess.run([sys.executable, "-m", "archcompiler", *[str(a) for a in args]], capture_output=True,
                          text=True, cwd=ROOT, preexec_fn=cap, timeout=300)


def cli(*args) -> tuple[int, str, str]:
    """The CLI in this process (the variants of a case; each case the issue reproduced runs in a
    fresh process, with :func:`run_limited`)."""
    from archcompiler.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def refused(args: list, culprit: Path, *words: str, fresh: bool = True) -> str:
    """Run the CLI on ``args`` (``fresh``: in a new process): exit 1, one line naming ``culprit`` and
    ``words``, no traceback, and ``culprit`` unchanged. Returns stderr."""
    before = sha256(culprit)
    if fresh:
        result = run_limited(*[str(a) for a in args])
        code, err = result.returncode, result.stderr
    else:
        code, _, err = cli(*args)
    assert code == 1, (args, code, err[-2000:])
    assert "Traceback" not in err and "internal error" not in err, err[-2000:]
    assert len(err) < 4000, err[:2000]
    line = err.strip().splitlines()[-1]
    assert str(culprit) in line, line
    for word in words:
        assert word in line, (word, line)
    assert sha256(culprit) == before
    return err


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint of the 3-class network as ``archc train`` writes it (spec, class names,
    preprocessing), as good.pt and good.safetensors, and a 16x16 image."""
    from PIL import Image

    import archcompiler
    from archcompiler.modelfile import ModelFile, write_model_file, write_safetensors
    from archcompiler.spec.source import plain
    from archcompiler.training.data import Preprocess

    folder = tmp_path_factory.mktemp("good")
    spec = archcompiler.load_spec(CNN, {"num_classes": 3})
    model = archcompiler.build(spec, seed=0)
    mf = ModelFile(str(folder / "good"), model.state_dict(), spec=plain(spec.document), spec_file=str(CNN),
                   heads=True, classes=["zero", "one", "two"], preprocess=Preprocess.from_spec(spec).as_dict(),
                   extra={"archc": archcompiler.__version__, "epoch": 1})
    write_model_file(folder / "good.pt", mf.payload())
    write_safetensors(folder / "good.safetensors", mf)
    Image.new("L", (20, 16), 128).save(folder / "img.png")
    return {"pt": folder / "good.pt", "safetensors": folder / "good.safetensors", "image": folder / "img.png",
            "dir": folder}


def tampered(good: dict, form: str, name: str, **fields) -> Path:
    """A copy of the good checkpoint with ``fields`` replaced: in a .safetensors file's metadata
    (values JSON-encoded, a ``str`` of raw JSON as given), in a .pt file's dict."""
    path = good["dir"] / f"{name}.{form}"
    if form == "safetensors":
        from safetensors import safe_open
        from safetensors.torch import save_file

        tensors = {}
        with safe_open(str(good["safetensors"]), framework="pt") as f:
            meta = dict(f.metadata())
            for key in f.keys():    # noqa: SIM118
                tensors[key] = f.get_tensor(key)
        for key, value in fields.items():
            meta[key] = value.raw if isinstance(value, Raw) else json.dumps(value)
        save_file(tensors, str(path), metadata=meta)
    else:
        import torch

        payload = torch.load(good["pt"], weights_only=True)
        payload.update(fields)
        torch.save(payload, path)
    return path


class Raw:
    """A metadata value written as it is (not JSON-encoded)."""

    def __init__(self, raw: str):
        self.raw = raw


def preprocess(good: dict, **changes) -> dict:
    import torch

    return {**torch.load(good["pt"], weights_only=True)["preprocess"], **changes}


# ----------------------------------------------------------------------------- what still works

@pytest.mark.parametrize("form", ["pt", "safetensors"])
def test_a_good_checkpoint_predicts_with_its_class_names(good, form):
    code, out, err = cli("predict", good[form], good["image"], "--top", "1", "--format", "json")
    assert code == 0, err
    assert json.loads(out)[0]["top"][0]["class"] in {"zero", "one", "two"}


# ----------------------------------------------------------------------------- item 1: the metadata

def test_a_spec_nested_200000_deep_in_the_metadata(good):
    path = tampered(good, "safetensors", "deep", spec=Raw("[" * 200_000 + "]" * 200_000))
    refused(["build", CNN, "--weights", path, "-q"], path, "spec", "nested")
    refused(["predict", path, good["image"]], path, "spec", "nested", fresh=False)


def test_a_spec_nested_200000_deep_in_a_pt_file(good):
    """torch's weights-only unpickler builds any depth (it does not recurse): the depth is checked."""
    import torch

    placeholder = "XSPECX"
    source = good["dir"] / "placeholder.pt"
    payload = torch.load(good["pt"], weights_only=True)
    torch.save({**payload, "spec": {"name": "digits_cnn", "layers": placeholder}}, source)
    deep = good["dir"] / "deep.pt"
    with zipfile.ZipFile(source) as zf, zipfile.ZipFile(deep, "w", zipfile.ZIP_STORED) as out:
        for name in zf.namelist():
            data = zf.read(name)
            if name.endswith("data.pkl"):
                needle = b"X" + len(placeholder).to_bytes(4, "little") + placeholder.encode()
                assert data.count(needle) == 1
                n = 200_000        # n empty lists, each appended to the one below: a list n deep
                data = data.replace(needle, b"]" * n + b"a" * (n - 1))
            out.writestr(name, data)
    refused(["predict", deep, good["image"]], deep, "spec", "nested more than 64 deep", fresh=False)


@pytest.mark.parametrize("form", ["safetensors", "pt"])
def test_class_names_of_another_count_than_the_outputs(good, form):
    path = tampered(good, form, "classes", classes=["a", "b"])
    refused(["predict", path, good["image"]], path, "classes", "2 classes", "3 outputs", fresh=form == "safetensors")


def test_class_names_that_are_not_strings(good):
    path = tampered(good, "pt", "numbers", classes=[0, 1, 2])
    refused(["predict", path, good["image"]], path, "classes", fresh=False)


def test_a_preprocess_key_that_is_not_a_field(good):
    path = tampered(good, "safetensors", "unknown", preprocess=preprocess(good, evil=1))
    refused(["predict", path, good["image"]], path, "preprocess.evil", "not a preprocessing field")


@pytest.mark.parametrize("form", ["safetensors", "pt"])
def test_an_unknown_interpolation(good, form):
    path = tampered(good, form, "interp", preprocess=preprocess(good, interpolation="evil"))
    refused(["predict", path, good["image"]], path, "preprocess.interpolation", "bilinear, bicubic, nearest",
            fresh=form == "safetensors")


def test_a_mean_of_1000_values(good):
    path = tampered(good, "safetensors", "mean", preprocess=preprocess(good, mean=[0.5] * 1000))
    refused(["predict", path, good["image"]], path, "preprocess.mean", "1,000 values")


def test_a_mean_of_three_values_for_a_grayscale_network(good):
    path = tampered(good, "pt", "rgb", preprocess=preprocess(good, mean=[0.5] * 3, std=[0.5] * 3))
    refused(["predict", path, good["image"]], path, "preprocess.mean", "1 channels", fresh=False)


@pytest.mark.parametrize(("form", "size", "words", "fresh"), [
    ("safetensors", 60_000, ["is 60000", "4096"], True),
    ("safetensors", -3, ["is -3"], False),
    ("pt", 60_000, ["is 60000", "4096"], True),
    ("pt", 32, ["is 32", "takes 16x16"], False),
])
def test_a_preprocess_size_out_of_bounds_blames_the_checkpoint(good, form, size, words, fresh):
    path = tampered(good, form, f"size{size}", preprocess=preprocess(good, size=size))
    err = refused(["predict", path, good["image"]], path, "preprocess.size", *words, fresh=fresh)
    assert "cannot read" not in err and str(good["image"]) not in err


def test_a_spec_name_that_is_not_a_name(good):
    """The spec's name goes into the message of a checkpoint of another spec: it must be a name."""
    import torch

    payload = torch.load(good["pt"], weights_only=True)
    path = good["dir"] / "name.pt"
    torch.save({**payload, "spec": {**payload["spec"], "name": "x" * 100_000}}, path)
    err = refused(["build", SPECS / "googlenet-small.yaml", "--weights", path, "-q"], path, "spec.name", fresh=False)
    assert "xxxxxxxxxx" not in err


# ----------------------------------------------------------------------------- item 2: decompression bombs

def write_png(path: Path, width: int, height: int, rows: int) -> Path:
    """A 1-bit grayscale PNG of ``width`` x ``height`` whose first ``rows`` rows are written (all
    black): a few KB, however large it says it is."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\0" * (1 + (width + 7) // 8)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(row * rows)) + chunk(b"IEND", b""))
    return path


def test_predict_refuses_a_decompression_bomb_and_evaluate_skips_it(good):
    bomb = write_png(good["dir"] / "bomb.png", 30_000, 30_000, rows=8)
    err = refused(["predict", good["safetensors"], bomb], bomb, "IMAGE", "too large", "pixels")
    assert "DecompressionBomb" not in err
    folder = good["dir"] / "data"
    (folder / "one").mkdir(parents=True)
    (folder / "one" / "bomb.png").write_bytes(bomb.read_bytes())
    (folder / "one" / "fine.png").write_bytes(good["image"].read_bytes())
    code, out, err = cli("evaluate", good["safetensors"], "--data", folder, "--plot", "none", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["skipped"] == 1 and "DecompressionBomb" not in err


def test_a_large_image_is_read_without_pillows_raw_warning(good):
    """100 million pixels: above Pillow's warning, below its error. Read, and said in archc's words."""
    big = write_png(good["dir"] / "big.png", 10_000, 10_000, rows=10_000)
    result = run_limited("predict", good["safetensors"], big, "--top", "1")
    assert result.returncode == 0, result.stderr
    assert "DecompressionBombWarning" not in result.stderr and "warn" not in result.stderr.lower()
    assert f"archc: {big} is a large image (10,000x10,000" in result.stderr


def test_an_elongated_image_is_not_resized_whole(monkeypatch):
    """A 1 x 100,000 strip resized so its shorter side is 256 would be 25.6 million x 256 pixels
    before the crop (32 s and 7 GB); only the part the crop keeps is resized."""
    from PIL import Image

    from archcompiler.training.data import MAX_RESIZED_PIXELS, Preprocess

    resize = Image.Image.resize

    def bounded(self, size, *args, **kwargs):
        assert size[0] * size[1] <= MAX_RESIZED_PIXELS, f"resized whole to {size}"
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", bounded)
    pre = Preprocess(size=16, resize=256, mean=(0.5,), std=(0.5,))
    x = pre.evaluation(Image.new("L", (100_000, 1), 200))
    assert tuple(x.shape) == (1, 16, 16) and abs(x.mean().item() - (200 / 255 - 0.5) / 0.5) < 1e-3
    small = Image.linear_gradient("L").resize((40, 30))        # an ordinary image: resized whole, as before
    expected = pre.to_tensor(small.resize((341, 256), Image.BILINEAR).crop((162, 120, 178, 136)))
    assert (pre.evaluation(small) - expected).abs().max().item() == 0


# ----------------------------------------------------------------------------- item 3: zip bombs

def deflated_copy(good: dict, name: str, inflated: int, declared: int | None = None) -> Path:
    """good.pt with its largest tensor's record replaced by ``inflated`` bytes of zeros, deflated
    (a few hundred KB); with ``declared``, the record's headers say it holds that many bytes."""
    path = good["dir"] / name
    with zipfile.ZipFile(good["pt"]) as zf:
        big = max(zf.infolist(), key=lambda info: info.file_size).filename
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
            for info in zf.infolist():
                if info.filename != big:
                    out.writestr(info.filename, zf.read(info.filename))
                    continue
                record = zipfile.ZipInfo(big)
                record.compress_type = zipfile.ZIP_DEFLATED
                with out.open(record, "w") as f:
                    zeros = bytes(MiB)
                    for _ in range(inflated // MiB):
                        f.write(zeros)
    if declared is not None:                  # the central directory and the local header lie
        data = bytearray(path.read_bytes())
        at = data.find(b"PK\x01\x02")
        while at >= 0:
            length = struct.unpack_from("<H", data, at + 28)[0]
            if bytes(data[at + 46: at + 46 + length]) == big.encode():
                struct.pack_into("<I", data, at + 24, declared)
                struct.pack_into("<I", data, struct.unpack_from("<I", data, at + 42)[0] + 22, declared)
            at = data.find(b"PK\x01\x02", at + 4)
        path.write_bytes(bytes(data))
    return path


def test_a_zip_bomb_is_refused_before_it_is_inflated(good):
    bomb = deflated_copy(good, "bomb.pt", 96 * MiB)
    assert bomb.stat().st_size < MiB
    refused(["build", CNN, "--weights", bomb, "-q"], bomb, "--weights", "96 MiB", "compressed", "refused unread")


def test_a_record_that_lies_about_its_size_is_inflated_no_further_than_it_says(good):
    """torch's reader (miniz) inflates a record into a buffer of the size it declares: 96 MiB of zeros
    declared as the tensor's own size give that tensor (its first bytes), not 96 MiB."""
    import torch

    from archcompiler.modelfile import read_weights

    with zipfile.ZipFile(good["pt"]) as zf:
        size = max(info.file_size for info in zf.infolist())
    lie = deflated_copy(good, "lie.pt", 96 * MiB, declared=size)
    state = read_weights(lie).state_dict
    biggest = max(state.values(), key=lambda t: t.numel() * t.element_size())
    assert biggest.numel() * biggest.element_size() == size and not biggest.any()
    assert all(torch.equal(v, w) for v, w in zip(state.values(), read_weights(good["pt"]).state_dict.values())
               if v is not biggest)


# ----------------------------------------------------------------------------- issue 31: another network's checkpoint

def test_another_networks_checkpoint_is_counted_alike_and_names_the_first_layer(good):
    """The count was 122 through build (the classifier layers left out: they would start afresh)
    and 128 through predict: every tensor that does not fit counts, whatever the command."""
    import archcompiler
    from archcompiler import BackendError

    messages = []
    for form in ("pt", "safetensors"):
        for run in (lambda f: archcompiler.build(SPECS / "googlenet-small.yaml", weights=f),
                    lambda f: archcompiler.predict(SPECS / "googlenet-small.yaml", [good["image"]], weights=f)):
            with pytest.raises(BackendError) as info:
                run(good[form])
            assert len(info.value.errors) == 1
            messages.append(info.value.errors[0].message.replace(str(good[form]), "FILE"))
    assert len(set(messages)) == 1, messages
    assert "holds spec digits_cnn" in messages[0] and "the first layer that differs is conv1 (conv1.weight is not in" \
        in messages[0], messages[0]
