"""A spec (and the spec inside a model file) is untrusted data: it never runs code, never hangs,
never exhausts memory, and every rejection is located.

- ``corpus/bad/*.yaml``: one file per failure kind, each ending in ``# expect: LINE:COL: message``;
- ``corpus/inject/*.yaml``: attempts to run code through every string that reaches generated code;
  none may create its marker file, through ``build``, ``--emit python``, ``load_model`` or ``draw``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CORPUS, ROOT, SPECS, no_hang, run_archc

import archcompiler
from archcompiler import ArchcError, BackendError, SpecError
from archcompiler.cli import main
from archcompiler.passes import infer_shapes

BAD = sorted((CORPUS / "bad").glob("*.yaml"))
INJECT = sorted((CORPUS / "inject").glob("*.yaml"))
EXPECT = re.compile(rb"^# expect: (\d+):(\d+): (.*)$", re.M)


def archc(*args: str) -> tuple[int, str]:
    """The CLI in this process (fast), with everything it prints."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:          # argparse's usage errors
            code = exc.code
    return code, out.getvalue() + err.getvalue()


def test_the_corpus_covers_every_failure_kind():
    assert len(BAD) >= 50
    assert all(EXPECT.search(p.read_bytes()) for p in BAD), "every corpus file ends in '# expect: L:C: message'"


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_spec_is_refused_at_its_place(path):
    line, column, message = EXPECT.search(path.read_bytes()).groups()
    with no_hang(), pytest.raises(ArchcError) as caught:
        infer_shapes(archcompiler.lower(archcompiler.load_spec(path)))
    found = [(d.line, d.column, d.message) for d in caught.value.errors]
    assert any(d.line == int(line) and d.column == int(column) and message.decode() in d.message
               for d in caught.value.errors), found


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_spec_exits_1_with_a_located_message(path):
    code, text = archc("validate", str(path))
    line, column, _ = EXPECT.search(path.read_bytes()).groups()
    assert code == 1
    assert f"{path}:{int(line)}:{int(column)}:" in text
    assert "internal error" not in text and "Traceback" not in text


# ----------------------------------------------------------------------------- code injection

def _no_marker(tmp_path: Path) -> None:
    assert not list(tmp_path.glob("PWNED*")), "code from a spec was executed"


@pytest.mark.parametrize("path", INJECT, ids=lambda p: p.stem)
def test_injection_through_build_and_emit(path, tmp_path):
    text = path.read_text().replace("MARKER", str(tmp_path / "PWNED"))
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(text)
    try:
        model = archcompiler.build(spec_file)
    except ArchcError:
        pass
    else:           # accepted: every string was made safe; the module must still run
        import torch
        model.eval()
        model(torch.randn(1, *model.INPUT_SHAPE))
    code, out = archc("build", str(spec_file), "--emit", "python", "-o", str(tmp_path / "m.py"), "-q")
    assert code in (0, 1) and "internal error" not in out
    if code == 0:   # the emitted file runs without side effects too
        subprocess.run([sys.executable, str(tmp_path / "m.py")], check=True, timeout=120)
    _no_marker(tmp_path)


def _edited_model_file(tmp_path: Path, edit) -> Path:
    """A genuine model file whose embedded spec was then edited by hand."""
    import torch

    path = tmp_path / "model.pt"
    model = archcompiler.build(SPECS / "googlenet-small.yaml", seed=0)
    archcompiler.save_model(model, path)
    payload = torch.load(path, weights_only=True)
    edit(payload["spec"])
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("edit", [
    lambda s: s.setdefault("torch", {}).update(class_name="X(nn.Module): pass\nimport os\nos.system('touch MARKER')\nclass Y"),
    lambda s: s["outputs"].update({"main=__import__('os').system('touch MARKER'),x": {"layer": "prob"}}),
    lambda s: s.update(extends="/etc/passwd"),
    lambda s: s["params"].update(num_classes="__import__('os').system('touch MARKER')"),
    lambda s: s["layers"][0]["table"]["rows"][0].update(name="a');import os;os.system('touch MARKER');('"),
    lambda s: s.update(name="x\"\"\"\nimport os; os.system('touch MARKER')\n\"\"\""),
], ids=["class_name", "output_name", "extends", "expression", "layer_name", "spec_name"])
def test_injection_through_an_edited_model_file(edit, tmp_path):
    marker = str(tmp_path / "PWNED")

    def edit_with_marker(spec):
        edit(spec)
        text = yaml.safe_dump(spec).replace("MARKER", marker)
        spec.clear()
        spec.update(yaml.safe_load(text))

    path = _edited_model_file(tmp_path, edit_with_marker)
    with pytest.raises(ArchcError):
        archcompiler.load_model(path)
    code, out = archc("draw", str(path), "-o", str(tmp_path / "d.dot"))
    assert code == 1 and "internal error" not in out
    _no_marker(tmp_path)


def test_generated_code_is_checked_before_it_runs():
    from archcompiler.backends.torch.verify import check_source

    ok = "import torch\nclass Net:\n    def f(self):\n        return torch.cat([self.a], 1)\n"
    check_source(ok, {"Net"})
    for bad in ("import os\n", "class Net:\n    x = eval('1')\n", "class Evil: pass\n", "x = 1\n",
                "class Net:\n    def f(self):\n        return self.__class__\n", "class Net(:\n"):
        with pytest.raises(BackendError, match="generated code refused"):
            check_source(bad, {"Net"})


def test_layers_named_like_the_generated_code_still_build(tmp_path):
    """Names the generated code uses itself are mangled, not refused: the module runs and keeps them."""
    import torch

    layers = [{"name": n, "op": "conv", "out": 4, "kernel": 3, "padding": 1} for n in ("self", "torch", "F")]
    layers += [{"name": n, "op": "relu"} for n in ("forward", "training", "loss", "x", "nn", "getattr")]
    spec = yaml.safe_dump({"name": "Tensor", "input": [3, 8, 8], "layers": layers})
    model = archcompiler.build(spec, seed=0)
    model.eval()
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4, 8, 8)
    assert {"self.weight", "torch.weight", "F.weight"} <= set(model.state_dict())
    assert type(model).__name__ == "TensorNet"


# ----------------------------------------------------------------------------- bounds

def test_bombs_are_refused_at_once(tmp_path):
    cases = {
        "9**9**9": ["--set", "num_classes=9**9**9"],
        "10**10**10 via a param": ["--set", "params.width=10**10**10"],
        "huge int": ["--set", "num_classes=99999999999999999999999999999"],
    }
    for name, args in cases.items():
        with no_hang():
            code, text = archc("validate", str(SPECS / "googlenet.yaml"), *args)
        assert code == 1 and "too large" in text or "less than or equal" in text, (name, text)
    big = tmp_path / "big.yaml"
    big.write_text("name: x\ninput: [3, 8, 8]\ndoc: '" + "a" * 3_000_000 + "'\nlayers: []\n")
    with no_hang():
        code, text = archc("validate", str(big))
    assert code == 1 and "larger than" in text


@pytest.mark.parametrize("value, message", [
    ("&a [*a]", "refers to a value that contains it"),
    ("&a {x: *a}", "refers to a value that contains it"),
    ("[" * 200 + "]" * 200, "nested more than"),
    ("{a: &a [x, x, x, x, x, x, x, x], b: &b [*a, *a, *a, *a, *a, *a, *a, *a], c: &c [*b, *b, *b, *b, *b, *b, *b, *b],"
     " d: &d [*c, *c, *c, *c, *c, *c, *c, *c], e: &e [*d, *d, *d, *d, *d, *d, *d, *d], f: [*e, *e, *e, *e, *e]}",
     "values once YAML aliases are expanded"),
    ("[1, 2", "YAML syntax error"),
    ("!!python/object:os.system x", "is not allowed"),
], ids=["recursive-alias", "recursive-mapping", "deep-nesting", "alias-bomb", "syntax", "tag"])
def test_set_values_are_read_like_a_file(value, message):
    """A --set value goes through the same bounded YAML reading as a spec file: located, exit 1."""
    with no_hang():
        code, text = archc("validate", str(SPECS / "googlenet.yaml"), "--set", f"params.x={value}")
    assert code == 1 and message in text and "internal error" not in text, text
    assert "--set params.x:" in text and len(text) < 2000, text


def test_a_module_too_large_for_memory_is_refused_before_allocating():
    spec = yaml.safe_dump({"name": "huge", "input": [3, 64, 64],
                           "layers": [{"name": "c", "op": "conv", "out": 10**9, "kernel": 3}]})
    with no_hang(), pytest.raises(BackendError, match="more than the .* GiB free") as caught:
        archcompiler.build(spec)
    assert "--no-memory-check" in caught.value.errors[0].hint


def test_sizes_torch_cannot_index_are_refused_in_validation():
    spec = yaml.safe_dump({"name": "x", "input": [3, 2**31, 8], "layers": [{"name": "r", "op": "relu"}]})
    with pytest.raises(SpecError, match="less than or equal to 2147483647"):
        archcompiler.load_spec(spec)


def test_a_parameter_may_use_one_written_after_it():
    spec = archcompiler.load_spec(yaml.safe_dump({
        "name": "x", "input": [3, 8, 8], "params": {"a": "b * 2", "b": 2},
        "layers": [{"name": "c", "op": "conv", "out": "a", "kernel": 1}]}))
    assert spec.params["a"] == 4


def test_a_layer_may_read_one_declared_after_it():
    spec = archcompiler.load_spec(yaml.safe_dump({
        "name": "x", "input": [3, 8, 8],
        "layers": [{"name": "head", "op": "conv", "out": 2, "kernel": 1, "input": "stem"},
                   {"name": "stem", "op": "conv", "out": 4, "kernel": 3, "padding": 1, "input": "input"}],
        "outputs": {"main": {"layer": "head"}}}))
    report = archcompiler.analyze(spec)
    assert [r["name"] for r in report["rows"]] == ["stem", "head"]


def test_a_bad_set_value_is_reported_once():
    code, text = archc("validate", str(SPECS / "googlenet.yaml"), "--set", "num_classes=9**9**9")
    assert code == 1 and text.count("\n  ") == 1 and "unknown name" not in text
    code, text = archc("validate", str(SPECS / "googlenet.yaml"), "--set", "num_classes=0")
    assert code == 1 and text.count("\n  ") == 1


@pytest.mark.parametrize("key", ["extends=other.yaml", "edits=[]", "keep_claims=true"])
def test_set_refuses_keys_read_while_loading(key):
    code, text = archc("validate", str(SPECS / "googlenet-2class.yaml"), "--set", key)
    assert code == 1 and "--set cannot change" in text


@pytest.mark.parametrize("value", ["nan", "-0.1", "1", "inf", "x"])
def test_tolerance_must_be_a_fraction(value):
    code, text = archc("check", str(SPECS / "googlenet.yaml"), "--tolerance", value)
    assert code == 2 and "--tolerance" in text


# ----------------------------------------------------------------------------- files

def test_an_output_never_replaces_the_input_spec(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text((SPECS / "googlenet-small.yaml").read_text().replace("extends: googlenet.yaml",
                                                                          f"extends: {SPECS / 'googlenet.yaml'}"))
    before = spec.read_bytes()
    for args in (["build", str(spec), "--emit", "python", "-o", str(spec)],
                 ["build", str(spec), "-o", str(spec)],
                 ["draw", str(spec), "-o", str(spec), "--format", "dot"]):
        code, text = archc(*args)
        assert code == 1 and "is an input of this command" in text, args
    assert spec.read_bytes() == before


@pytest.mark.slow
def test_a_default_output_name_never_replaces_a_file_archc_did_not_write(tmp_path):
    mine = tmp_path / "googlenet_small.py"
    mine.write_text("my own work\n")
    result = run_archc("build", str(SPECS / "googlenet-small.yaml"), "--emit", "python", "-q", cwd=tmp_path)
    assert result.returncode == 1 and "not written by archc" in result.stderr and "--force" in result.stderr
    assert mine.read_text() == "my own work\n"
    # a file archc wrote itself is replaced; --force replaces anything
    result = run_archc("build", str(SPECS / "googlenet-small.yaml"), "--emit", "python", "-q", "--force",
                       cwd=tmp_path)
    assert result.returncode == 0 and "archc" in mine.read_text()
    result = run_archc("build", str(SPECS / "googlenet-small.yaml"), "--emit", "python", "-q", cwd=tmp_path)
    assert result.returncode == 0
    (tmp_path / "googlenet_small.svg").write_text("<svg>mine</svg>")
    result = run_archc("draw", str(SPECS / "googlenet-small.yaml"), cwd=tmp_path)
    assert result.returncode == 1 and (tmp_path / "googlenet_small.svg").read_text() == "<svg>mine</svg>"
    (tmp_path / "googlenet_small.svg").unlink()
    for _ in range(2):      # its own drawing it replaces
        assert run_archc("draw", str(SPECS / "googlenet-small.yaml"), cwd=tmp_path).returncode == 0


def test_outputs_to_a_folder_or_an_unwritable_place_give_one_line(tmp_path):
    code, text = archc("draw", str(SPECS / "vgg16.yaml"), "-o", str(tmp_path), "--format", "dot")
    assert code == 1 and "is a folder" in text and len(text.strip().splitlines()) == 1
    # places nobody can write to, root included (CI runs as root): below a file, and in /proc
    (tmp_path / "afile").write_text("x")
    code, text = archc("draw", str(SPECS / "vgg16.yaml"), "-o", str(tmp_path / "afile" / "x.dot"))
    assert code == 1 and "afile is a file, not a folder" in text and len(text.strip().splitlines()) == 1
    code, text = archc("draw", str(SPECS / "vgg16.yaml"), "-o", "/proc/archc-test/x.dot", "--format", "dot")
    assert code == 1 and "cannot write" in text and len(text.strip().splitlines()) == 1
    # and a folder without write permission, which binds every user but root
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, text = archc("draw", str(SPECS / "vgg16.yaml"), "-o", str(locked / "x.dot"), "--format", "dot")
        if os.access(locked, os.W_OK):        # root may write anyway: then it writes, as it should
            assert code == 0 and (locked / "x.dot").exists(), text
        else:
            assert code == 1 and "cannot write" in text and len(text.strip().splitlines()) == 1
    finally:
        locked.chmod(0o700)


def test_temporary_files_never_stay(tmp_path):
    from archcompiler.io import TEMP_TAG, atomic_path, write_text

    target = tmp_path / "out.txt"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    # what a killed process (SIGKILL: no clean-up possible) left is removed by the next write
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".out.txt{TEMP_TAG}{dead}-abc.tmp"
    stale.write_text("left behind")
    write_text(target, "done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_sigterm_during_a_write_leaves_no_temporary_file(tmp_path):
    script = (
        "import sys, time\n"
        "from archcompiler.cli import main\n"
        "import archcompiler.io as io\n"
        "real = io.atomic_path\n"
        "def slow(path):\n"
        "    cm = real(path)\n"
        "    class Slow:\n"
        "        def __enter__(self):\n"
        "            t = cm.__enter__(); print('writing', flush=True); time.sleep(30); return t\n"
        "        def __exit__(self, *a): return cm.__exit__(*a)\n"
        "    return Slow()\n"
        "io.atomic_path = slow\n"
        f"sys.exit(main(['draw', {str(SPECS / 'vgg16.yaml')!r}, '-o', {str(tmp_path / 'v.dot')!r}]))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.terminate()
    proc.wait(timeout=30)
    assert proc.returncode == 130
    assert list(tmp_path.iterdir()) == []


def test_exit_codes_are_documented():
    readme = (ROOT / "README.md").read_text()
    for code in ("0", "1", "2", "3"):
        assert re.search(rf"`{code}`", readme), code


# ----------------------------------------------------------------------------- round three: specs

def _small_spec(**extra) -> str:
    """A spec of three layers, with ``extra`` top-level keys (as YAML flow text)."""
    head = "".join(f"{k}: {v}\n" for k, v in extra.items())
    return (f"name: small\ninput: [3, 8, 8]\n{head}layers:\n  - {{name: c, op: conv, out: 4, kernel: 3}}\n"
            "  - {name: pool, op: global_avg_pool}\n  - {name: fc, op: linear, out: 2}\n")


def test_extends_deeper_than_its_bound_is_refused_at_its_line(tmp_path):
    for i in range(1000):
        (tmp_path / f"s{i}.yaml").write_text(f"extends: s{i + 1}.yaml\nname: s{i}\n" if i < 999 else _small_spec())
    done = run_archc("validate", "s0.yaml", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert re.search(r"s\d+\.yaml:1:10: extends: 'extends' goes more than 32 specs deep", done.stdout + done.stderr)
    assert "Traceback" not in done.stderr
    (tmp_path / "s30.yaml").write_text(_small_spec())          # 30 deep: a chain that is long, not hostile
    assert run_archc("validate", "s0.yaml", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("parent", ["/etc/passwd", "../../../../../../etc/passwd", "notes.txt", "secret.yaml"])
def test_extends_reads_specs_only_and_never_prints_another_files_lines(parent, tmp_path):
    """A spec from anyone must not make archc print the lines of another file (`extends: /etc/shadow`
    printed each line as an unknown key): a parent that is no .yaml file is refused by its name alone, a
    .yaml file that is no spec with a short excerpt of its first key."""
    secret = [f"line{i}_{'x' * 30}_{i}: secret value {i}" for i in range(20)]
    (tmp_path / "notes.txt").write_text("\n".join(secret))
    (tmp_path / "secret.yaml").write_text("\n".join(secret))
    (tmp_path / "child.yaml").write_text(f"extends: {parent}\nname: child\n")
    for command in (["validate", "child.yaml"], ["resolve", "child.yaml"], ["diff", "child.yaml", "resnet18"]):
        done = run_archc(*command, cwd=tmp_path)
        text = done.stdout + done.stderr
        assert done.returncode == 1 and "Traceback" not in text, text
        assert "root:" not in text and "secret value" not in text and "line1_" not in text, text
        assert len(text.strip().splitlines()) <= 2, text


def test_extends_takes_a_shipped_specs_name(tmp_path):
    (tmp_path / "mine.yaml").write_text("extends: resnet50\nname: resnet50_2class\nparams: {num_classes: 2}\n")
    done = run_archc("flops", "mine.yaml", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"][-1]["output"] == [2]


def test_a_rename_rule_that_backtracks_matches_in_linear_time(tmp_path):
    """`(a|a)*$` against 36 a's and a b backtracks for minutes in Python's re; RE2 matches it at once. The
    pattern's shape is still bounded, and what RE2 cannot run (back-references) is refused at its line."""
    name = "a" * 36 + "b"
    (tmp_path / "hang.yaml").write_text(_small_spec(torch="{rename: [['^(a|a)*$', 'x'], ['^(c)$', 'conv_\\1']]}")
                                        .replace("name: c,", f"name: {name},"))
    with no_hang(300):
        done = run_archc("build", "hang.yaml", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (tmp_path / "backref.yaml").write_text(_small_spec(torch="{rename: [['(a)\\1', 'x']]}"))
    done = run_archc("validate", "backref.yaml", cwd=tmp_path)
    assert done.returncode == 1 and "back-references" in done.stdout + done.stderr


def test_rename_rules_are_matched_by_re2_with_re_s_replacements():
    from archcompiler.spec.rename import compile_rule

    rule = compile_rule(r"^(conv\d|pool\d)[^/]*(/\w+)?$")
    assert rule.sub(r"features.\1", "conv1/relu") == "features.conv1"
    with no_hang(5):
        assert compile_rule("^(a|a)*$").sub("x", "a" * 36 + "b") == "a" * 36 + "b"
    with pytest.raises(ValueError, match="refused"):
        compile_rule("a(?=b)")


@pytest.mark.parametrize("value", ["true", "false", "yes"])
def test_repeat_is_a_number_not_a_boolean(value, tmp_path):
    text = ("name: r\ninput: [3, 8, 8]\nblocks:\n  b:\n    layers:\n      - {name: c, op: conv, out: 4, kernel: 3, "
            f"padding: 1}}\nlayers:\n  - {{name: s, use: b, repeat: {value}}}\n  - {{name: fc, op: linear, out: 2}}\n")
    (tmp_path / "r.yaml").write_text(text)
    code, out = archc("validate", str(tmp_path / "r.yaml"))
    assert code == 1 and "r.yaml:8:" in out and "repeat" in out, out


def test_escape_codes_from_a_file_never_reach_the_terminal(tmp_path):
    (tmp_path / "esc.yaml").write_text(_small_spec(**{'"\\e[2J\\e[31mevil\\a"': 1}))
    done = run_archc("validate", "esc.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert "\x1b" not in done.stdout + done.stderr and "\x07" not in done.stdout + done.stderr
    assert "\\x1b[31mevil" in done.stdout + done.stderr


# ----------------------------------------------------------------------------- round three: a full disk

@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB file system (tmpfs, mounted as root; CI runs as root), for writes that run out of space."""
    where = tmp_path / "small"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)],
                                           capture_output=True).returncode != 0:
        pytest.skip("a full disk is made by mounting a 256 KiB tmpfs, which needs root (CI runs as root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _assert_no_space(done: subprocess.CompletedProcess, where: Path, allowed: set[str] = frozenset()) -> None:
    text = done.stdout + done.stderr
    assert done.returncode == 1, text
    assert "no space left" in text and "Traceback" not in text and "internal error" not in text, text
    left = {p.relative_to(where).as_posix() for p in where.rglob("*") if p.is_file()}
    assert not [n for n in left if ".archc-" in n], left          # no temporary file stays
    assert left <= allowed, left


@pytest.mark.parametrize("command", [
    ["build", str(SPECS / "googlenet-small.yaml"), "-o", "OUT/small.pt", "-q"],
    ["draw", str(SPECS / "googlenet.yaml"), "-o", "OUT/googlenet.svg"],
    ["build", str(SPECS / "googlenet.yaml"), "--emit", "python", "-o", "OUT/g.py", "-q"],
])
def test_a_full_disk_is_exit_1_with_nothing_half_written(command, full_disk):
    (full_disk / "filler").write_bytes(b"\0" * (240 * 1024))       # a few KiB left
    done = run_archc(*[a.replace("OUT", str(full_disk)) for a in command])
    _assert_no_space(done, full_disk, {"filler"})


@pytest.mark.slow
def test_a_full_disk_during_training_and_import_is_exit_1(full_disk, tmp_path):
    from archcompiler.training.digits import write_digits

    write_digits(tmp_path / "digits")
    done = run_archc("train", str(ROOT / "tests" / "data" / "digits-cnn.yaml"), "--data", str(tmp_path / "digits"),
                     "--set", "num_classes=2", "--epochs", "1", "--out",
                     str(full_disk / "run"))
    # what was complete stays (the run folder's small files, a checkpoint written whole); nothing half-written
    _assert_no_space(done, full_disk, {f"run/{n}" for n in ("args.json", "spec.yaml", "last.pt", "last.safetensors",
                                                             "metrics.csv", "metrics.jsonl", "best.pt")})
    for p in full_disk.rglob("*"):
        p.unlink() if p.is_file() else None
    pytest.importorskip("onnxscript")
    assert run_archc("build", str(ROOT / "tests" / "data" / "digits-cnn.yaml"), "--emit", "onnx", "--keep-batch-norm",
                     "-o", str(tmp_path / "d.onnx"), "-q").returncode == 0
    (full_disk / "filler").write_bytes(b"\0" * (240 * 1024))
    done = run_archc("import", str(tmp_path / "d.onnx"), "-o", str(full_disk / "d.yaml"))
    _assert_no_space(done, full_disk, {"filler"})
