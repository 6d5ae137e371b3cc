"""The dependency rules of the README's architecture section, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

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
