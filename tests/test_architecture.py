"""The dependency rules of the README's architecture section, checked on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "archcompiler"
BACKENDS = {"dot": PACKAGE / "backends" / "dot.py", "report": PACKAGE / "backends" / "report.py",
            "torch": PACKAGE / "backends" / "torch"}


def imports(path: Path) -> set[str]:
    """Every module a file imports, resolved to a dotted path inside archcompiler where relative."""
    found = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_backends_never_import_each_other():
    for name, where in BACKENDS.items():
        files = [where] if where.is_file() else sorted(where.glob("*.py"))
        others = [f"archcompiler.backends.{o}" for o in BACKENDS if o != name]
        for f in files:
            bad = [i for i in imports(f) if any(i == o or i.startswith(o + ".") for o in others)]
            assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_nothing_imports_the_cli_and_the_ir_never_imports_passes_or_backends():
    for f in PACKAGE.rglob("*.py"):
        if "cli" in f.relative_to(PACKAGE).parts or f.name == "__main__.py":   # the entry point
            continue
        assert not [i for i in imports(f) if i.startswith("archcompiler.cli")], f
    for f in (PACKAGE / "ir").glob("*.py"):
        assert not [i for i in imports(f) if i.startswith(("archcompiler.passes", "archcompiler.backends"))], f
    for f in (PACKAGE / "spec").glob("*.py"):
        assert not [i for i in imports(f) if i.startswith(("archcompiler.ir", "archcompiler.passes",
                                                            "archcompiler.backends"))], f


def test_every_command_is_a_thin_layer_over_the_public_api():
    """A command parses its arguments and calls the API: the modules of archcompiler/cli/ import only
    archcompiler.api, archcompiler.errors and each other."""
    allowed = ("archcompiler.api", "archcompiler.errors", "archcompiler.cli")
    for f in sorted((PACKAGE / "cli").glob("*.py")):
        inside = [i for i in imports(f) if i.startswith("archcompiler")]
        assert all(i.startswith(allowed) for i in inside), (f.name, sorted(set(inside) - {
            i for i in inside if i.startswith(allowed)}))


def test_the_ops_read_only_the_field_vocabulary_and_never_torch():
    """An op module sits under everything that uses ops: it imports the spec's field types (spec/layers.py,
    spec/base.py, spec/limits.py), pydantic and the op kit, never the IR, passes, backends, importers,
    training or torch (its torch code is text; a class it needs is named by module path)."""
    allowed = ("archcompiler.ops", "archcompiler.spec.layers", "archcompiler.spec.base", "archcompiler.spec.limits",
               "archcompiler.util", "archcompiler.errors")
    for f in sorted((PACKAGE / "ops").glob("*.py")):
        inside = [i for i in imports(f) if i.startswith("archcompiler")]
        assert all(i.startswith(allowed) for i in inside), (f.name, inside)
        assert not [i for i in imports(f) if i.split(".")[0] in ("torch", "torchvision", "onnx", "numpy")], f.name


def test_loading_every_op_imports_no_torch_and_no_plugin_code():
    code = ("import sys\nfrom archcompiler.ops import registry\nr = registry()\n"
            "print(len(r.kinds), sorted({'torch', 'onnx', 'numpy'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.strip().split(" ", 1)
    assert int(count) >= 30 and loaded == "[]"


# ----------------------------------------------------------------------------- the import graph

def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_statements(path: Path):
    """Each import in a file, at module level or inside a function, as (line, module, names):
    ``module`` is the dotted module the statement names, resolved where relative; ``names`` are
    what ``from module import ...`` takes from it (empty for ``import module``)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, []


def import_graph():
    """archcompiler's modules and who imports whom (an edge to the module a statement loads: the
    submodule ``from . import x`` names, or the module ``from .x import y`` takes ``y`` from)."""
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(MODULES)
    for me, path in MODULES.items():
        for line, module, names in import_statements(path):
            targets = [f"{module}.{n}" if f"{module}.{n}" in MODULES else module for n in names] or [module]
            for target in targets:
                while target not in MODULES and "." in target:
                    target = target.rpartition(".")[0]
                if target in MODULES and target != me:
                    g.add_edge(me, target, line=line)
    return g


def test_the_import_graph_has_no_cycle():
    """Module-level and function-level imports alike: a lazy import that closes a cycle is still a
    cycle (it only moves the failure to run time)."""
    import networkx as nx

    g = import_graph()
    assert g.number_of_edges() > 50            # the graph is really read, imports inside functions too
    assert ("archcompiler.api.analysis", "archcompiler.measure.profile") in g.edges
    cycles = list(nx.simple_cycles(g))
    described = [" -> ".join(f"{a} (line {g.edges[a, b]['line']})" for a, b in zip(c, c[1:] + c[:1]))
                 for c in cycles[:5]]
    assert not cycles, "import cycles:\n" + "\n".join(described)


def test_nothing_inside_the_package_imports_the_package_root():
    """The root re-exports the API (api.py) and the version (version.py); a module that imported
    the root would depend on everything the root imports."""
    found = [f"{path.relative_to(ROOT)}:{line}" for me, path in MODULES.items() if me != "archcompiler"
             for line, module, _ in import_statements(path) if module == "archcompiler"]
    assert not found, f"imports of the package root: {found}"


def test_no_module_imports_another_packages_private_names():
    """``_name`` (a function, or a module such as passes/optimize/_rewrite.py) is for the package
    that defines it: ``from ..x import _private`` across packages is refused."""
    found = []
    for me, path in MODULES.items():
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        for line, module, names in import_statements(path):
            if not module.startswith("archcompiler"):
                continue
            for dotted in [f"{module}.{n}" for n in names] or [module]:
                parts = dotted.split(".")
                private = next((i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")), None)
                if private is None:
                    continue
                owner = ".".join(parts[:private])
                owner_package = owner if (PACKAGE.parent / owner.replace(".", "/") / "__init__.py").exists() \
                    else owner.rpartition(".")[0]
                if owner_package != package:
                    found.append(f"{path.relative_to(ROOT)}:{line} imports {dotted}")
    assert not found, "\n".join(found)


def test_the_measuring_tools_are_used_only_by_the_api_and_the_cli():
    """archcompiler/measure/ sits above the backends: no pass, backend, IR or spec module imports it."""
    g = import_graph()
    measure = [m for m in MODULES if m.startswith("archcompiler.measure")]
    users = {u for m in measure for u in g.predecessors(m)}
    assert users and all(u.startswith(("archcompiler.cli", "archcompiler.api", "archcompiler.measure"))
                         for u in users), sorted(users)


def test_every_public_function_of_the_api_says_its_parameters():
    """The Python API mirrors the command line with explicit keywords (no ``**options`` hiding them), each
    function documented."""
    import inspect

    from archcompiler import api

    hidden, checked = [], []
    for name, fn in vars(api).items():
        if name.startswith("_") or not inspect.isfunction(fn) or not fn.__module__.startswith(api.__name__ + "."):
            continue
        checked.append(name)
        kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
        if inspect.Parameter.VAR_KEYWORD in kinds or inspect.Parameter.VAR_POSITIONAL in kinds or not fn.__doc__:
            hidden.append(name)
    assert len(checked) > 25 and not hidden, hidden


# ----------------------------------------------------------------------------- start-up

def test_the_root_and_the_command_line_load_no_library_before_a_command_needs_it():
    """`import archcompiler` and the command line's parser stay light: pydantic, networkx and PyYAML
    are imported by the command that uses them (`archc flops` is mostly start-up)."""
    import subprocess
    import sys

    code = ("import sys, archcompiler, archcompiler.cli\narchcompiler.cli.parser()\n"
            "print(sorted({'pydantic', 'networkx', 'yaml', 'torch'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_public_name_of_the_root_resolves():
    import archcompiler
    from archcompiler import api, spec

    assert all(getattr(archcompiler, name) is not None for name in archcompiler.__all__)
    assert set(archcompiler.__all__) <= set(dir(archcompiler))
    assert archcompiler.build is api.build and archcompiler.load_spec is spec.load_spec
    try:
        archcompiler.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_a_subpackage_is_an_attribute_of_the_root_whatever_was_imported_before():
    """``archcompiler.passes.annotated_graph`` works in a fresh interpreter that imported nothing but the root
    (a test that used it failed when run alone: the attribute existed only after another test's import)."""
    code = ("import sys, archcompiler\nassert 'archcompiler.passes' not in sys.modules\n"
            "print(archcompiler.passes.annotated_graph.__name__, archcompiler.errors.SpecError.__name__)\n"
            "print(getattr(archcompiler, 'passes.shapes', None), getattr(archcompiler, '__wrapped__', None))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["annotated_graph", "SpecError", "None", "None"], result.stdout


def test_the_archc_program_is_the_entry_that_exits_without_a_last_collection():
    import tomllib

    from archcompiler import cli

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["archc"] == "archcompiler.cli:entry" and callable(cli.entry)
    assert "entry()" in (PACKAGE / "__main__.py").read_text()


@pytest.mark.parametrize("command, collector_at_exit", [("flops", False), ("build", True)])
def test_a_command_that_loaded_torch_exits_with_the_collector_on(command, collector_at_exit, tmp_path):
    """Short commands skip the last collection; one that loaded torch must not (torch objects in
    cycles, such as a torchrun process group, abort the process when left to C++ exit)."""
    probe = ("import atexit, gc, sys\n"
             "atexit.register(lambda: print('collector', gc.isenabled(), 'torch' in sys.modules))\n"
             f"sys.argv = ['archc', '{command}', 'resnet18']\n"
             "from archcompiler.cli import entry\nentry()\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"collector {collector_at_exit} {collector_at_exit}"


@pytest.mark.parametrize("code", [
    "from archcompiler.spec import load_spec; load_spec('specs/resnet.yaml')",
    "from archcompiler.spec import load_spec; load_spec('specs/mobilenet_v2.yaml', {'width_mult': 0.5})",
    "import archcompiler; archcompiler.load_spec('efficientnet_b0')",
    "from archcompiler.passes import analyze; from archcompiler.spec import load_spec; "
    "analyze(load_spec('specs/regnet.yaml'))",
    "import archcompiler.ops.conv; from archcompiler.spec import load_spec; load_spec('specs/resnet.yaml')",
    "import archcompiler.spec.resolve; import archcompiler; archcompiler.analyze('resnet18')",
    "from archcompiler.importers import onnx; from archcompiler.spec import load_spec; load_spec('specs/convnext.yaml')",
    "from archcompiler.backends.torch.codegen import generate; import archcompiler; archcompiler.build('resnet18')",
])
def test_a_spec_with_shape_conditions_loads_whatever_was_imported_before(code):
    """A condition on a block's input shape (`when: "in_channels != out"`) is decided the same in a fresh
    interpreter that imported only the spec package: no behaviour depends on import order."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
