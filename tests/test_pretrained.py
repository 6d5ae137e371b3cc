"""Pretrained weights by name (issue 33): ``--pretrained`` and ``--weights NAME|URL`` fetch torchvision's
published file into torch's hub cache and use its recipe (preprocessing, category names).

Nothing here reaches the internet: the weights files are made in the test (a zoo model's
state_dict, named ``NAME-<sha256 prefix>.pth`` as torch.hub names them) and served by a local HTTP
server on 127.0.0.1, with a table of torchvision's shape that the test writes
(``ARCHC_PRETRAINED_TABLE``) and ``TORCH_HOME`` in a temporary folder."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import re
import socket
import threading
from pathlib import Path

import pytest
import torch
from conftest import run_archc

import archcompiler
from archcompiler import pretrained
from archcompiler.errors import BackendError, SpecError

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CATEGORIES = [f"n{i:04d}" for i in range(1000)]
CATEGORIES[281] = "tabby"
CATEGORIES[7] = "cock"
TABBY, COCK = 281, 7
VIT_SMALL = ["--set", "depth=1", "--set", "dim=64", "--set", "mlp=128", "--set", "heads=4"]


# ----------------------------------------------------------------------------- a local server

class Served:
    """What the server holds (path -> bytes), how it misbehaves per path, and the requests it saw."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}       # ok, corrupt, cut (once), cut_always, ignore_range
        self.requests: list[tuple[str, str | None]] = []


def _handler(state: Served) -> type:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            state.requests.append((self.path, self.headers.get("Range")))
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            mode = state.modes.get(self.path, "ok")
            if mode == "corrupt":
                data = data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:]
            start = 0
            asked = re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if asked and mode != "ignore_range":
                start = int(asked.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if mode in ("cut", "cut_always"):          # half of it, then the connection drops
                if mode == "cut":
                    state.modes[self.path] = "ok"
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture(scope="module")
def server():
    state = Served()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def closed_port_url(path: str) -> str:
    """A URL on 127.0.0.1 where nothing listens (the network is down, as far as archc can tell)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


# ----------------------------------------------------------------------------- weights and table

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weights_bytes(builder: str, sets: list[str] | None = None, winner: int | None = None,
                  seen: torch.Tensor | None = None, old_names: bool = False) -> bytes:
    """The state_dict of a zoo model (seed 0) as torch.save writes it; with ``winner``, its classifier
    answers that category whatever the image (weights 0, that bias high); with ``seen``, its
    BatchNorm statistics are those of these images (as a trained network's are of its data), and
    its convolutions before BatchNorm 10 times larger (the same function: a trained network's
    weights are larger than the initial ones, so that a few steps of fine-tuning move its
    statistics little); ``old_names``: ViT's MLP named as in torchvision's published files
    (``mlp.linear_1``, ``mlp.linear_2``, which torchvision renames ``mlp.0``, ``mlp.3`` as it loads)."""
    import io

    model = archcompiler.build(builder, sets or [], seed=0)
    if seen is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".conv.weight"):
                    p.mul_(10)
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.reset_running_stats()
                    m.momentum = None              # the plain average over what it sees
            model.train()
            model(seen)
    state = model.state_dict()
    if winner is not None:
        bias = [k for k in state if k.endswith(".bias") and state[k].shape == (1000,)][-1]
        state[bias.rsplit(".", 1)[0] + ".weight"].zero_()
        state[bias].zero_()
        state[bias][winner] = 10.0
    if old_names:
        state = {k.replace(".mlp.0.", ".mlp.linear_1.").replace(".mlp.3.", ".mlp.linear_2."): v
                 for k, v in state.items()}
        assert any(".mlp.linear_1." in k for k in state)
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def published_name(stem: str, data: bytes) -> str:
    """torch.hub's convention: ``stem-<the first 8 hex digits of the sha256>.pth``."""
    return f"{stem}-{_sha(data)[:8]}.pth"


def entry(url: str, file: str, data: bytes, crop: int = 224, resize: int = 256, **extra) -> dict:
    return {"url": url, "file": file, "sha256": _sha(data)[:8],
            "transforms": {"resize": resize, "crop": crop, "interpolation": "bilinear", "mean": MEAN, "std": STD},
            "categories": "imagenet1k", "num_params": 0, "min_size": [1, 1], "acc1": 0.0, "acc5": 0.0,
            "gflops": 0.0, "file_size_mb": round(len(data) / 2**20, 3), "recipe": "made by the test", **extra}


def write_table(path: Path, builders: dict) -> Path:
    path.write_text(json.dumps({"about": "test table", "categories": {"imagenet1k": CATEGORIES},
                                "builders": builders}))
    return path


@pytest.fixture(scope="module")
def squeeze() -> bytes:
    """squeezenet1_1's weights that see a tabby in every image."""
    return weights_bytes("squeezenet1_1", winner=TABBY)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """TORCH_HOME and the table, in a temporary folder: (the cache folder, the table's path)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    table = tmp_path / "pretrained.json"
    monkeypatch.setenv("ARCHC_PRETRAINED_TABLE", str(table))
    monkeypatch.setenv("ARCHC_PROGRESS_SECONDS", "0")
    return tmp_path / "torch" / "hub" / "checkpoints", table


def serve(server: Served, data: bytes, stem: str = "squeezenet1_1", mode: str = "ok") -> tuple[str, str]:
    file = published_name(stem, data)
    path = f"/models/{len(server.files)}/{file}"
    server.files[path], server.modes[path] = data, mode
    return server.url + path, file


def squeeze_entry(server, squeeze, table, mode="ok", url=None) -> pretrained.Entry:
    served, file = serve(server, squeeze, mode=mode)
    write_table(table, {"squeezenet1_1": {"default": "IMAGENET1K_V1", "weights": {
        "IMAGENET1K_V1": entry(url or served, file, squeeze)}}})
    return pretrained.weights_entry("squeezenet1_1", None)


# ----------------------------------------------------------------------------- fetch

def test_download_shows_progress_then_the_cache_is_used_without_a_network(server, squeeze, home, capsys):
    cache, table = home
    e = squeeze_entry(server, squeeze, table)
    assert (e.name, e.file, e.categories[TABBY]) == ("IMAGENET1K_V1", published_name("squeezenet1_1", squeeze), "tabby")
    path = pretrained.fetch(e)
    assert path == cache / e.file and path.read_bytes() == squeeze
    assert not list(cache.glob("*.partial"))
    err = capsys.readouterr().err
    assert f"downloading {e.url}" in err and "MiB of" in err and f"downloaded {e.file}" in err
    # the cache hit: the same file, with no server to ask
    offline = dataclasses.replace(e, url=closed_port_url("/gone.pth"))
    assert pretrained.fetch(offline) == path
    assert capsys.readouterr().err == ""
    # torch.hub's folder, computed as torch computes it
    import torch.hub

    assert pretrained.hub_dir() == Path(torch.hub.get_dir())


def test_a_corrupted_download_is_refused_by_its_hash_and_not_kept(server, squeeze, home):
    cache, table = home
    e = squeeze_entry(server, squeeze, table, mode="corrupt")
    with pytest.raises(BackendError) as exc:
        pretrained.fetch(e, progress=False)
    text = str(exc.value)
    actual = _sha(squeeze[:100] + bytes(b ^ 0xFF for b in squeeze[100:200]) + squeeze[200:])
    assert f"begins {actual[:8]}, not {e.sha256}" in text and e.url in text
    assert list(cache.iterdir()) == []              # neither the file nor its .partial kept


def test_a_file_in_the_cache_that_is_not_the_published_one_is_refused(squeeze, home):
    cache, table = home
    file = published_name("squeezenet1_1", squeeze)
    write_table(table, {"squeezenet1_1": {"default": "IMAGENET1K_V1", "weights": {
        "IMAGENET1K_V1": entry(closed_port_url(f"/{file}"), file, squeeze)}}})
    cache.mkdir(parents=True)
    (cache / file).write_bytes(squeeze[:-10])
    with pytest.raises(BackendError, match=f"is not the published file: its sha256 begins .*, not {_sha(squeeze)[:8]}"):
        pretrained.fetch(pretrained.weights_entry("squeezenet1_1"))
    assert (cache / file).is_file()          # the user's file: said, not removed


def test_a_download_cut_off_is_resumed_with_a_range_request(server, squeeze, home, capsys):
    cache, table = home
    e = squeeze_entry(server, squeeze, table, mode="cut")
    path = pretrained.fetch(e)
    assert path.read_bytes() == squeeze
    asked = [r for p, r in server.requests if server.url + p == e.url]
    assert asked == [None, f"bytes={len(squeeze) // 2}-"]
    assert "cut off" in capsys.readouterr().err


def test_a_download_cut_off_again_and_again_is_kept_and_resumed_by_the_next_run(server, squeeze, home):
    cache, table = home
    e = squeeze_entry(server, squeeze, table, mode="cut_always")
    with pytest.raises(BackendError, match="cut off after .* kept in .*partial: running again resumes"):
        pretrained.fetch(e, progress=False)
    partial = cache / f"{e.file}.partial"
    kept = partial.stat().st_size
    assert 0 < kept < len(squeeze)
    server.modes[e.url[len(server.url):]] = "ok"
    assert pretrained.fetch(e, progress=False).read_bytes() == squeeze
    assert server.requests[-1][1] == f"bytes={kept}-" and not partial.exists()


def test_a_server_that_ignores_the_range_request_sends_the_whole_file_again(server, squeeze, home):
    cache, table = home
    e = squeeze_entry(server, squeeze, table, mode="ignore_range")
    cache.mkdir(parents=True)
    (cache / f"{e.file}.partial").write_bytes(b"left over from another download" * 10)
    assert pretrained.fetch(e, progress=False).read_bytes() == squeeze
    assert server.requests[-1][1] is not None          # asked to resume; sent from the start; written from zero


def test_offline_the_error_names_the_file_the_url_and_the_folder(squeeze, home):
    cache, table = home
    file = published_name("squeezenet1_1", squeeze)
    url = closed_port_url(f"/models/{file}")
    write_table(table, {"squeezenet1_1": {"default": "IMAGENET1K_V1", "weights": {
        "IMAGENET1K_V1": entry(url, file, squeeze)}}})
    with pytest.raises(BackendError) as exc:
        pretrained.fetch(pretrained.weights_entry("squeezenet1_1"), progress=False)
    text = str(exc.value)
    assert f"cannot download {file} from {url}" in text and f"place it in {cache} " in text
    assert text.startswith(f"{cache / file}: ")


def test_a_url_is_fetched_the_same_way_its_hash_taken_from_its_name(server, squeeze, home):
    cache, _ = home
    url, file = serve(server, squeeze)
    assert pretrained.hash_from_name(file) == _sha(squeeze)[:8]
    assert pretrained.fetch(url, progress=False) == cache / file
    bad = server.url + f"/models/x/squeezenet1_1-{'0' * 8}.pth"
    server.files[bad[len(server.url):]] = squeeze
    with pytest.raises(BackendError, match="sha256 begins .*, not 00000000"):
        pretrained.fetch(bad, progress=False)


# ----------------------------------------------------------------------------- names and recipes

def test_names_defaults_and_the_errors_that_list_what_there_is(squeeze, home):
    _, table = home
    e = entry("https://example.invalid/a-12345678.pth", "a-12345678.pth", squeeze)
    write_table(table, {"resnet50": {"default": "IMAGENET1K_V2", "weights": {"IMAGENET1K_V1": e, "IMAGENET1K_V2": e}},
                        "googlenet": {"default": "IMAGENET1K_V1", "overrides": {"transform_input": True},
                                      "weights": {"IMAGENET1K_V1": e}}})
    assert pretrained.weights_entry("resnet50").name == "IMAGENET1K_V2"
    assert pretrained.weights_entry("resnet50", "DEFAULT").name == "IMAGENET1K_V2"
    assert pretrained.weights_entry("resnet50", "IMAGENET1K_V1").name == "IMAGENET1K_V1"
    with pytest.raises(BackendError, match="resnet50 has no weights called IMAGENET1K_V9.*IMAGENET1K_V1, "
                                           "IMAGENET1K_V2"):
        pretrained.weights_entry("resnet50", "IMAGENET1K_V9")
    with pytest.raises(BackendError, match="no pretrained weights for googlenet_2class.*weights exist for googlenet"):
        pretrained.weights_entry("googlenet_2class")
    pre = pretrained.weights_entry("resnet50").preprocess
    assert (pre.size, pre.resize, pre.interpolation, pre.mean) == (224, 256, "bilinear", tuple(MEAN))
    # GoogLeNet's weights normalise inside torchvision's model (transform_input): archc's preprocessing
    # does the same before it (ImageNet-normalised x * std / 0.5 + (mean - 0.5) / 0.5 = (p - 0.5) / 0.5)
    g = pretrained.weights_entry("googlenet")
    assert g.preprocess.mean == (0.5, 0.5, 0.5) and g.preprocess.std == (0.5, 0.5, 0.5) and g.model_note
    p = torch.rand(3, 8, 8)
    x = (p - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    inside = x * (torch.tensor(STD) / 0.5).view(3, 1, 1) + ((torch.tensor(MEAN) - 0.5) / 0.5).view(3, 1, 1)
    assert torch.allclose(inside, (p - 0.5) / 0.5, atol=1e-6)


def test_resolve_gives_the_weights_input_size_and_preprocessing(squeeze, home, monkeypatch):
    _, table = home
    e = entry("https://example.invalid/vit-12345678.pth", "vit-12345678.pth", squeeze, crop=384, resize=384)
    write_table(table, {"vit_b_16": {"default": "IMAGENET1K_V1", "weights": {"IMAGENET1K_SWAG_E2E_V1": e,
                                                                           "IMAGENET1K_V1": entry(
                                                                               "https://example.invalid/v-12345678.pth",
                                                                               "v-12345678.pth", squeeze)}},
                        "swin_t": {"default": "IMAGENET1K_V1", "overrides": {"window_shift": 3},
                                   "weights": {"IMAGENET1K_V1": e}}})
    r = pretrained.resolve("vit_b_16", "IMAGENET1K_SWAG_E2E_V1", False, ["num_classes=2"], fetch_file=False)
    assert r.overrides[0] == "input=[3,384,384]" and r.overrides[-1] == "num_classes=2"
    assert "data.crop=384" in r.overrides and "data.interpolation=bilinear" in r.overrides
    assert archcompiler.load_spec("vit_b_16", r.overrides).input == (3, 384, 384)
    # the user's own input size wins, and is said
    notes = []
    r = pretrained.resolve("vit_b_16", None, True, ["input=[3,160,160]"], fetch_file=False, note=notes.append)
    assert "data.crop=160" in r.overrides and "data.resize=183" in r.overrides
    assert "trained on 224x224 images; this network takes 160x160" in notes[0]
    by_builder = pretrained.resolve("vit_b_16", "vit_b_16.DEFAULT", False, None, fetch_file=False)
    assert by_builder.entry.name == "IMAGENET1K_V1"
    # a file or nothing passes as it is; a builder argument archc does not model is refused
    assert pretrained.resolve("vit_b_16", "runs/x/best.pt", False, ["a=1"]).overrides == ["a=1"]
    with pytest.raises(BackendError, match="window_shift=3 .* which archc's spec does not model"):
        pretrained.resolve("swin_t", None, True, None, fetch_file=False)
    with pytest.raises(SpecError, match="not both"):
        pretrained.resolve("vit_b_16", "IMAGENET1K_V1", True, None)


# ----------------------------------------------------------------------------- the commands

@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Trivially separable classes: dark and bright images (each of its own shade, a smooth gradient
    across it, no pixel noise: a crop looks like the whole), in class folders."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(-12, 12, 56).view(1, 56, 1)
    out = {}
    for split, count in (("train", 12), ("val", 4)):
        for name, level in (("dark", 45), ("bright", 210)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                shade = level + torch.randint(-25, 26, (1, 1, 3), generator=g)
                pixels = (shade + ramp).expand(48, 56, 3).clamp(0, 255).to(torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
        out[split] = root / split
    return out


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory, server, squeeze) -> dict[str, str]:
    """A TORCH_HOME and a table shared by the command tests: squeezenet1_1 and a small vit_b_16 served."""
    root = tmp_path_factory.mktemp("cli")
    vit = weights_bytes("vit_b_16", VIT_SMALL[1::2], winner=COCK, old_names=True)
    sq_url, sq_file = serve(server, squeeze)
    vit_url, vit_file = serve(server, vit, stem="vit_b_16")
    table = write_table(root / "pretrained.json", {
        "squeezenet1_1": {"default": "IMAGENET1K_V1", "weights": {"IMAGENET1K_V1": entry(sq_url, sq_file, squeeze)}},
        "vit_b_16": {"default": "IMAGENET1K_V1", "weights": {"IMAGENET1K_V1": entry(vit_url, vit_file, vit)}}})
    return {"TORCH_HOME": str(root / "torch"), "ARCHC_PRETRAINED_TABLE": str(table), "ARCHC_PROGRESS_SECONDS": "0"}


def test_predict_pretrained_prints_category_names_for_a_cnn_and_a_transformer(cli_home, images):
    image = images["val"] / "dark" / "0.png"
    r = run_archc("predict", "squeezenet1_1", "--pretrained", str(image), "--top", "2", env=cli_home)
    assert r.returncode == 0, r.stderr
    assert re.search(r"\d+\.\d+%\s+tabby\n", r.stdout) and "downloaded squeezenet1_1-" in r.stderr
    r = run_archc("predict", "vit_b_16", "--weights", "IMAGENET1K_V1", str(image), *VIT_SMALL, "--top", "1",
                  "--format", "json", env=cli_home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["top"][0]["class"] == "cock"
    # the second time, from the cache: no download
    r = run_archc("predict", "squeezenet1_1", "--weights", "DEFAULT", str(image), "--top", "1", env=cli_home)
    assert r.returncode == 0 and "tabby" in r.stdout and "download" not in r.stderr


def test_evaluate_and_build_pretrained(cli_home, images, tmp_path):
    folder = tmp_path / "eval"
    for name in ("tabby", "n0003"):
        (folder / name).mkdir(parents=True)
        for i in range(2):
            (folder / name / f"{i}.png").write_bytes((images["val"] / "dark" / f"{i}.png").read_bytes())
    r = run_archc("evaluate", "squeezenet1_1", "--pretrained", "--data", str(folder), env=cli_home)
    assert r.returncode == 0, r.stderr
    assert "accuracy 0.5000 on 4 images" in r.stdout and "tabby" in r.stdout and "n0999" not in r.stdout
    r = run_archc("build", "squeezenet1_1", "--pretrained", "-q", "-o", str(tmp_path / "sq.pt"), env=cli_home)
    assert r.returncode == 0, r.stderr
    assert torch.equal(archcompiler.load_model(tmp_path / "sq.pt").state_dict()["classifier.1.bias"][TABBY],
                       torch.tensor(10.0))


def test_a_spec_with_other_layer_names_is_refused_naming_the_first_key(cli_home, images):
    r = run_archc("predict", "specs/squeezenet.yaml", "--weights", "squeezenet1_1.IMAGENET1K_V1",
                  str(images["val"] / "dark" / "0.png"), env=cli_home)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "does not fit spec squeezenet: the first layer that differs" in r.stderr


@pytest.mark.slow
def test_train_googlenet_pretrained_replaces_the_heads_and_fine_tunes(tmp_path, images):
    """torchvision's real googlenet file name in a temporary TORCH_HOME (a state_dict of the right keys,
    made here), no network: archc train googlenet --pretrained --set num_classes=2 fine-tunes it, with
    the seed's binary cross-entropy. The made weights are random, so the backbone is frozen (a real
    network's features separate the classes; random ones, fine-tuned for 6 steps, move the BatchNorm
    statistics too far for validation to mean anything); the heads learn."""
    from archcompiler.training.data import Preprocess, read_image

    pre = Preprocess(size=64, resize=73, mean=(0.5,) * 3, std=(0.5,) * 3)
    seen = torch.stack([pre.evaluation(read_image(f)) for f in sorted(images["train"].glob("*/*.png"))])
    data = weights_bytes("googlenet", ["input=[3,64,64]"], seen=seen)
    file = "googlenet-1378be20.pth"
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / file).write_bytes(data)
    table = write_table(tmp_path / "pretrained.json", {"googlenet": {
        "default": "IMAGENET1K_V1", "overrides": {"transform_input": True, "aux_logits": True, "init_weights": False},
        "weights": {"IMAGENET1K_V1": entry(closed_port_url(f"/models/{file}"), file, data)}}})
    env = {"TORCH_HOME": str(tmp_path / "torch"), "ARCHC_PRETRAINED_TABLE": str(table)}
    run = tmp_path / "run"
    r = run_archc("train", "googlenet", "--pretrained", "--data", str(images["train"]), "--val", str(images["val"]),
                  "--set", "num_classes=2", "--set", "loss=binary_cross_entropy", "--set", "input=[3,64,64]",
                  "--freeze", "inception_5b", "--set", "train.optimizer=adam", "--lr", "0.01", "--epochs", "2",
                  "--batch-size", "8", "--workers", "0", "--out", str(run), "-q", env=env)
    assert r.returncode == 0, r.stderr
    heads = [line for line in r.stderr.splitlines() if line.startswith("archc: new head")]
    assert len(heads) == 3, r.stderr                     # the main classifier and both auxiliary ones
    assert all(f"(1000, 1024) in {cache / file}" in line for line in heads)
    assert "trained on 224x224 images; this network takes 64x64" in r.stderr and "download" not in r.stderr
    args = json.loads((run / "args.json").read_text())
    assert args["arguments"]["pretrained"] is True and args["weights_file"] == str(cache / file)
    assert args["data_options"]["mean"] == [0.5, 0.5, 0.5] and args["data_options"]["resize"] == 73
    best = json.loads(json.dumps(torch.load(run / "best.pt", weights_only=True)["best"]))
    assert best["val_accuracy"] > 0.5, r.stderr           # above chance on held-out images
    # the paper's GoogLeNet (other layer names, LRN, no BatchNorm) cannot take these weights: said
    r = run_archc("predict", "specs/googlenet.yaml", "--pretrained", str(images["val"] / "dark" / "0.png"), env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "does not fit spec googlenet: the first layer that differs is" in r.stderr


def test_old_checkpoint_keys_are_renamed_as_torchvision_renames_them(tmp_path):
    """DenseNet's published files name 'denselayer1.norm.1', ViT's 'mlp.linear_1': torchvision's modules
    rename them as they load, and so does archc (the table's load_notes)."""
    t = torch.zeros(1)
    torch.save({"features.denseblock1.denselayer1.norm.1.weight": t, "features.denseblock1.denselayer1.conv.2.weight": t,
                "encoder.layers.encoder_layer_0.mlp.linear_1.bias": t, "fc.weight": t}, tmp_path / "old.pth")
    assert list(pretrained.read_published(tmp_path / "old.pth").state_dict) == [
        "features.denseblock1.denselayer1.norm1.weight", "features.denseblock1.denselayer1.conv2.weight",
        "encoder.layers.encoder_layer_0.mlp.0.bias", "fc.weight"]
