"""Reading and checking specs: load, validate, resolve, check, diff, the schema, the zoo and the op catalogue
(torch-free)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Diagnostic, SpecError

if TYPE_CHECKING:
    from ..spec import Spec


def load_spec(spec_or_path: Spec | str | Path, overrides: dict | list | None = None) -> Spec:
    """Read, compose and validate a spec (a file, a zoo name or a Spec) with ``--set`` values; every
    error located (:func:`archcompiler.spec.load_spec`). Imported here on first use, so that the API
    module itself (and the command line's start-up) stays light.

    Example::

        spec = archcompiler.load_spec("resnet50", {"num_classes": 2})
    """
    from ..spec import load_spec as _load

    return _load(spec_or_path, overrides)


def validate(specs: list[Spec | str | Path], overrides: dict | list | None = None) -> list[dict[str, Any]]:
    """Validate spec files (``archc validate``): each read, composed, checked against the op schemas and
    shaped, and the paper's claimed output sizes compared (not under ``overrides``: a variant's sizes
    differ by design; ``archc check`` compares those).

    Returns:
        one dict per spec: ``file``, ``valid``, ``summary`` (valid ones), ``errors`` (a list of
        :class:`Diagnostic`), ``output_claims`` and ``claims_compared``.

    Example::

        [r["valid"] for r in archcompiler.validate(["specs/googlenet.yaml"])]      # [True]
    """
    from ..errors import ArchcError, GraphError
    from ..passes import shaped_graph
    from ..passes.claims import check_output_claims, count_output_claims

    results = []
    for path in specs:
        try:
            spec = load_spec(path, overrides)
            g = shaped_graph(spec)
            claimed = count_output_claims(spec)
            compared = claimed > 0 and not overrides
            if compared:        # the paper's output sizes: of the whole network, whatever features: chooses
                whole = shaped_graph(dataclasses.replace(spec, features=[])) if spec.features else g
                wrong = check_output_claims(spec, whole)
                if wrong:
                    raise GraphError(wrong)
            results.append({"file": str(path), "valid": True, "summary": spec.summary(), "errors": [],
                            "output_claims": claimed, "claims_compared": compared})
        except ArchcError as exc:
            results.append({"file": str(path), "valid": False, "errors": list(exc.errors)})
    return results


def resolve(spec_or_path: Spec | str | Path, overrides: dict | list | None = None, *, format: str = "yaml",
            origins: bool = True) -> str:
    """The spec as archc reads it (``archc resolve``): ``extends``, ``edits`` and ``--set`` applied,
    validated. ``format="yaml"``: YAML with a ``# file:line`` comment per value (``origins=False``: plain);
    ``"json"``: ``{"spec": ..., "origins": ...}`` as JSON text.

    Example::

        print(archcompiler.resolve("specs/googlenet-2class.yaml"))
    """
    import json

    from ..spec.origins import annotated_yaml
    from ..spec.origins import origins as origin_map
    from ..spec.source import plain

    spec = load_spec(spec_or_path, overrides)
    if format == "json":
        return json.dumps({"spec": plain(spec.document), "origins": origin_map(spec.document)}, indent=2) + "\n"
    return annotated_yaml(spec.document, with_origins=origins)


def schema(output: str | Path | None = None) -> str:
    """The JSON Schema of a spec file (``archc schema``) for editors; with ``output``, also written there
    (atomically). Numbers in layer fields also take expressions (``round_to(64 * width, 8)``).

    Example::

        archcompiler.schema("schema/archc.schema.json")
    """
    from ..spec.schema import schema_text

    text = schema_text()
    if output is not None:
        from ..io import write_text

        write_text(output, text)
    return text


def check(spec_or_path: Spec | str | Path, overrides: dict | list | None = None,
          tolerance: float = 0.02) -> list[Diagnostic]:
    """Compare every claim of the spec with the computed value; return the mismatches.
    ``tolerance`` is the relative difference allowed for params and ops, in [0, 1)."""
    from ..passes import annotated_graph, check_claims, rows, shaped_graph, totals

    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise SpecError([Diagnostic(f"tolerance must be a number in [0, 1), got {tolerance!r}", "tolerance")])

    spec = load_spec(spec_or_path, overrides)
    if spec.features:       # the claims are the paper's, of the whole network: checked on it (features checked too)
        shaped_graph(spec)
        spec = dataclasses.replace(spec, features=[])
    g = annotated_graph(spec)
    return check_claims(spec, rows(g, spec), tolerance, totals(g))


def diff(a: Spec | str | Path, b: Spec | str | Path, overrides_a: dict | list | None = None,
         overrides_b: dict | list | None = None, layers: bool = False) -> dict[str, Any]:
    """Row-by-row differences between two specs, or layer by layer (``layers``, as ``archc diff --layers``;
    see :mod:`archcompiler.passes.diff`): ``rows`` (each with its ``status``, ``changes``, outputs and
    deltas), ``params``, ``total``; ``a_source`` / ``b_source`` name each file as people know it (a
    shipped spec as ``specs/NAME.yaml``).

    Example::

        archcompiler.diff("specs/googlenet.yaml", "specs/googlenet-2class.yaml")["total"]["params"]
    """
    from ..passes.diff import diff as _diff

    result = _diff(load_spec(a, overrides_a), load_spec(b, overrides_b), layers=layers)
    result["a_source"], result["b_source"] = _shown(result["a_file"]), _shown(result["b_file"])
    return result


def _shown(path: Any) -> str:
    """A shipped spec as ``specs/NAME.yaml``; any other file as given."""
    from ..spec.zoo import SPEC_DIR

    try:
        return f"specs/{Path(path).resolve().relative_to(SPEC_DIR)}"
    except (ValueError, OSError, TypeError):
        return str(path)


def zoo(pattern: str | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """The names archc answers to without a path (``archc zoo``): torchvision's builders that the shipped
    specs declare, then the shipped spec files. Each: ``name``, ``spec`` (the file, as
    ``specs/NAME.yaml``), ``sets`` (the parameters the name sets), ``input`` [C, H, W], ``params`` and
    ``macs`` (one image). ``pattern`` keeps the names containing it; ``progress`` shows a bar on stderr."""
    from ..passes import annotated_graph
    from ..passes.analyze import totals
    from ..spec import zoo as shipped
    from ..util import progress_bar

    names = [n for n in shipped.names() if pattern is None or pattern in n]
    entries = []
    for name in progress_bar(names, "specs", enabled=progress):
        builder = shipped.find(name)
        spec = load_spec(name)
        total = totals(annotated_graph(spec))
        entries.append({"name": name, "spec": f"specs/{builder.file.name}", "sets": builder.sets,
                        "input": list(spec.input), "params": total["params"], "macs": total["macs"]})
    return entries


def op_catalog(op: str | None = None) -> list[dict[str, Any]]:
    """Every op a spec can use (``archc ops``): archc's own, then the installed plugins' (entry-point group
    ``archcompiler.ops``), each ``{"op", "doc", "fields": [{"name", "type", "default", "doc"}], "provider",
    "kinds"}``; with ``op``, that one alone. Never imports torch.

    Raises :class:`~archcompiler.SpecError` for an op no installed package provides (naming the package
    that does, where archc knows one).

    >>> [f["name"] for f in op_catalog("dropout")[0]["fields"]]
    ['p']
    """
    from ..errors import SpecError, error
    from ..ops import catalog, unknown

    entries = catalog()
    if op is None:
        return entries
    found = [e for e in entries if e["op"] == op]
    if not found:
        message, hint = unknown(op)
        raise SpecError([error(message, "ops", hint=hint)])
    return found


def op_markdown(entries: list[dict[str, Any]] | None = None) -> str:
    """The README's op table (``archc ops --format markdown``) of :func:`op_catalog`'s entries (default: all).

    Example::

        print(archcompiler.op_markdown())
    """
    from ..ops import markdown

    return markdown(op_catalog() if entries is None else entries)


def plugin_problems() -> list[str]:
    """Why each installed op plugin that was left out was (it failed to load, or reuses a name): one line each.

    Example::

        for line in archcompiler.plugin_problems(): print(line)
    """
    from ..ops import plugin_problems as problems

    return list(problems())
