"""Putting a document together: ``extends`` (inheritance), ``edits`` and ``--set`` overrides.

Merge rules (documented in the README):
- mappings merge key by key, recursively; the child's value wins;
- lists (and scalars) replace the parent's value whole;
- ``_delete: [key, ...]`` inside a child mapping removes those keys of the parent;
- ``edits:`` changes inherited layers by name: ``set``, ``delete``, ``replace``,
  ``insert_before`` / ``insert_after`` (with ``block:`` they change a block's layers);
- ``--set PATH=VALUE`` is applied last: PATH is a top-level key path (``params.width``,
  ``outputs.main.loss``), a parameter name (``num_classes``) or a layer / table row and field
  (``inception_4b.5x5``, ``conv1.out``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import Location, SpecError, error
from . import zoo
from .base import suggest
from .document import Document
from .limits import MAX_EXTENDS_DEPTH
from .source import YDict, YList, clone, from_plain, looks_like_path, parse_yaml, plain, read_text

DELETE = "_delete"


def merge(parent: Any, child: Any) -> Any:
    """``child`` on top of ``parent`` (see the module doc for the rules)."""
    if not (isinstance(parent, dict) and isinstance(child, dict)):
        return clone(child)
    out = clone(parent)
    doomed = child.get(DELETE)
    if doomed is not None:
        if not isinstance(doomed, list) or not all(isinstance(k, str) for k in doomed):
            where = child.where(DELETE) if isinstance(child, YDict) else Location()
            raise SpecError([error("'_delete' takes a list of key names", DELETE, where,
                                   value=doomed if not isinstance(doomed, (dict, list)) else None,
                                   hint="e.g. _delete: [norm1, dropout]")])
        for key in doomed:
            if key in out:
                del out[key]
    for key, value in child.items():
        if key == DELETE:
            continue
        new = merge(out[key], value) if key in out and isinstance(value, dict) else clone(value)
        if isinstance(out, YDict) and isinstance(child, YDict):
            out.put(key, new, child.where(key), child.where(key, True))
        else:
            out[key] = new
    return out


# ----------------------------------------------------------------------------- finding layers

def item_name(item: Any, columns: list[str] | None = None) -> str | None:
    if isinstance(item, dict):
        name = item.get("name")
        return str(name) if name is not None else None
    if isinstance(item, list) and columns and "name" in columns:
        i = columns.index("name")
        return str(item[i]) if i < len(item) else None
    return None


def find_layer(items: Any, name: str) -> tuple[Any, int, list[str] | None] | None:
    """Where the layer or table row ``name`` stands: (list holding it, index, table columns)."""
    if not isinstance(items, list):
        return None
    for i, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get("table"), dict):
            table = item["table"]
            columns = table.get("columns") if isinstance(table.get("columns"), list) else None
            rows = table.get("rows")
            if isinstance(rows, list):
                for j, row in enumerate(rows):
                    if item_name(row, columns) == name:
                        return rows, j, columns
        elif item_name(item) == name:
            return items, i, None
    return None


def layer_names(items: Any) -> list[str]:
    names: list[str] = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("table"), dict):
            table = item["table"]
            columns = table.get("columns") if isinstance(table.get("columns"), list) else None
            names += [n for n in (item_name(r, columns) for r in table.get("rows") or []) if n]
        elif item_name(item):
            names.append(item_name(item))
    return names


def set_in_layer(holder: Any, index: int, columns: list[str] | None, changes: dict, loc: Location,
                 what: str) -> None:
    """Apply ``changes`` to the layer / row at ``holder[index]``."""
    item = holder[index]
    if isinstance(item, list):
        for key, value in changes.items():
            if key not in columns:
                raise SpecError([error(f"table row has no column {key!r}", what, loc,
                                       hint=suggest(key, columns))])
            item[columns.index(key)] = value
            if isinstance(item, YList):
                item.locs[columns.index(key)] = loc
        return
    new = merge(item, changes if isinstance(changes, YDict) else from_plain(changes, loc))
    holder[index] = new
    if isinstance(holder, YList):
        holder.locs[index] = holder.where(index)


CLAIM_COLUMNS = ("output", "params", "ops", "depth")


def strip_claims(doc: Any) -> None:
    """Remove every claim (layer ``claims``, table claim columns, the network's) from a document."""
    doc.pop("claims", None)
    def layers(items: Any) -> None:
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            item.pop("claims", None)
            table = item.get("table")
            if isinstance(table, dict) and isinstance(table.get("columns"), list):
                columns = table["columns"]
                drop = [i for i, c in enumerate(columns) if c in CLAIM_COLUMNS]
                for row in table.get("rows") or []:
                    if isinstance(row, list):
                        for i in reversed(drop):
                            if i < len(row):
                                _remove(row, i)
                    elif isinstance(row, dict):
                        row.pop("claims", None)
                for i in reversed(drop):
                    _remove(columns, i)
    layers(doc.get("layers"))
    for block in (doc.get("blocks") or {}).values():
        if isinstance(block, dict):
            layers(block.get("layers"))


# ----------------------------------------------------------------------------- edits

def apply_edits(doc: YDict, edits: Any) -> None:
    errors = []
    for n, raw in enumerate(edits if isinstance(edits, list) else []):
        loc = edits.where(n) if isinstance(edits, YList) else Location()
        try:
            from .document import Edit
            edit = Edit.model_validate(raw)
            action = edit.action()
        except Exception as exc:  # pydantic ValidationError or ValueError from action()
            errors.append(error(f"bad edit: {_first_line(exc)}", f"edits[{n}]", loc))
            continue
        path = f"edits[{n}]"
        if edit.block is not None:
            blocks = doc.get("blocks") or {}
            if edit.block not in blocks:
                errors.append(error(f"no block {edit.block!r} to edit", path + ".block", loc,
                                    hint=suggest(edit.block, set(blocks))))
                continue
            items = blocks[edit.block].get("layers")
        else:
            items = doc.get("layers")
        target = getattr(edit, action) if action != "set" else edit.layer
        if target is None:
            errors.append(error("'set' needs 'layer': the layer to change", path, loc))
            continue
        found = find_layer(items, target)
        if found is None:
            errors.append(error(f"no layer {target!r} to {action.replace('_', ' ')}", path, loc,
                                hint=suggest(target, set(layer_names(items)))))
            continue
        holder, index, columns = found
        new_layers = raw.get("layers") if isinstance(raw, dict) else None
        if action == "set":
            try:
                set_in_layer(holder, index, columns, raw["set"], loc, path)
            except SpecError as exc:
                errors += exc.errors
        elif action == "delete":
            _remove(holder, index)
            if edit.block is None:        # an inherited output of the deleted layer goes with it (aux heads)
                outputs = doc.get("outputs")
                for name in [k for k, v in outputs.items() if isinstance(v, dict) and v.get("layer") == target] \
                        if isinstance(outputs, dict) else []:
                    del outputs[name]
        elif action in ("replace", "insert_before", "insert_after"):
            if not new_layers:
                errors.append(error(f"{action} needs 'layers': the layers to put there", path, loc))
                continue
            at = index + (1 if action == "insert_after" else 0)
            if action == "replace":
                _remove(holder, index)
            for k, layer in enumerate(new_layers):
                lloc = new_layers.where(k) if isinstance(new_layers, YList) else loc
                if isinstance(holder, YList):
                    holder.insert_at(at + k, clone(layer), lloc)
                else:
                    holder.insert(at + k, clone(layer))
    if errors:
        raise SpecError(errors)


def _remove(holder: list, index: int) -> None:
    if isinstance(holder, YList):
        holder.remove_at(index)
    else:
        del holder[index]


def _first_line(exc: Exception) -> str:
    if hasattr(exc, "errors"):
        errs = exc.errors()
        if errs:
            e = errs[0]
            return f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
    return str(exc).splitlines()[0]


# ----------------------------------------------------------------------------- overrides

def parse_override(text: str) -> tuple[str, Any]:
    """``'inception_4b.5x5=96'`` -> ``('inception_4b.5x5', 96)`` (the value read as YAML)."""
    loc = Location(f"--set {text}")
    if "=" not in text:
        raise SpecError([error("an override is PATH=VALUE", "", loc, hint="e.g. --set num_classes=2")])
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise SpecError([error("an override needs a path before '='", "", loc)])
    if not value.strip():
        return key, ""
    # the same bounded reading as a file: aliases, nesting and size are limited, errors are located
    return key, plain(parse_yaml(value, file=f"--set {key}", root=key))


def apply_overrides(doc: YDict, overrides: dict[str, Any] | list[str] | None) -> None:
    if not overrides:
        return
    pairs = [parse_override(o) for o in overrides] if isinstance(overrides, list) else list(overrides.items())
    errors = []
    for key, value in pairs:
        loc = Location(f"--set {key}={value}")
        try:
            _apply_override(doc, key, value, loc)
        except SpecError as exc:
            errors += exc.errors
    if errors:
        raise SpecError(errors)


LOAD_TIME_KEYS = ("extends", "edits", "keep_claims")   # read while the file loads, before --set applies


def _apply_override(doc: YDict, key: str, value: Any, loc: Location) -> None:
    parts = key.split(".")
    if parts[0] in LOAD_TIME_KEYS:
        raise SpecError([error(f"--set cannot change {parts[0]!r}: it is applied while the file loads", key, loc,
                               hint=f"write '{parts[0]}' in a spec file (a variant that extends this one)")])
    top = set(Document.model_fields)
    params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
    if parts[0] in top:
        _set_path(doc, parts, from_plain(value, loc), loc, key)
        return
    if parts[0] in params and len(parts) == 1:
        _put(params, parts[0], value, loc)
        return
    found = find_layer(doc.get("layers"), parts[0])
    if found is not None:
        if len(parts) < 2:
            raise SpecError([error(f"{parts[0]!r} is a layer: name a field, e.g. {parts[0]}.out=64",
                                   key, loc)])
        holder, index, columns = found
        change: Any = value
        for part in reversed(parts[2:]):
            change = {part: change}
        set_in_layer(holder, index, columns, from_plain({parts[1]: change}, loc), loc, key)
        return
    choices = set(params) | set(layer_names(doc.get("layers"))) | top
    raise SpecError([error(f"--set {key}: {parts[0]!r} is neither a parameter, a layer nor a "
                           "top-level key", key, loc, hint=suggest(parts[0], choices))])


def _put(node: dict, key: str, value: Any, loc: Location) -> None:
    """``node[key] = value``, recording ``loc`` where the mapping keeps locations."""
    if isinstance(node, YDict):
        node.put(key, value, loc)
    else:
        node[key] = value


def _set_path(node: Any, parts: list[str], value: Any, loc: Location, key: str) -> None:
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            found = find_layer(node, part)
            if found is None:
                try:
                    index = int(part)
                    node[index]
                except (ValueError, IndexError):
                    raise SpecError([error(f"no item {part!r} here", key, loc,
                                           hint=suggest(part, set(layer_names(node))))]) from None
                holder, columns = node, None
            else:
                holder, index, columns = found
            if last:
                holder[index] = value
                continue
            if columns is not None:
                set_in_layer(holder, index, columns, from_plain({parts[i + 1]: value}, loc), loc, key)
                return
            node = holder[index]
            continue
        if not isinstance(node, dict):
            raise SpecError([error(f"cannot set {part!r} inside a {type(node).__name__}", key, loc)])
        if last:
            _put(node, part, value, loc)
        else:
            if part not in node or not isinstance(node[part], (dict, list)):
                new = YDict(loc=loc)
                _put(node, part, new, loc)
            node = node[part]


# ----------------------------------------------------------------------------- loading

def _close_name(name: str) -> str:
    import difflib

    from .source import close_spec_file
    where = "'archc zoo' lists the shipped specs"
    for suffix in SPEC_SUFFIXES:                # a file here, its suffix left out: mynet for mynet.yaml
        if Path(name + suffix).is_file():
            return f"did you mean {name + suffix}? {where}"
    close = difflib.get_close_matches(name, zoo.names(), n=1, cutoff=0.6)
    file = close_spec_file(Path(name))          # the closest spec file here, by its name without suffix
    if file and (not close or _likeness(name, Path(file).stem) > _likeness(name, close[0])):
        return f"did you mean {file}? {where}"
    return f"did you mean {close[0]!r}? {where}" if close else f"give a file path; {where}"


def _likeness(a: str, b: str) -> float:
    import difflib
    return difflib.SequenceMatcher(None, a, b).ratio()


SPEC_SUFFIXES = (".yaml", ".yml")


def load_document(source: str | Path, overrides: dict[str, Any] | list[str] | None = None,
                  _chain: tuple[str, ...] = ()) -> tuple[YDict, str]:
    """The merged document for ``source`` (a path or YAML text) and the file name it came from."""
    if not _chain and zoo.is_name(source) and not Path(source).exists():
        builder = zoo.find(source)
        if builder is None:
            raise SpecError([error(f"no spec file or shipped spec called {source!r}", "", Location(source),
                                   hint=_close_name(source))])
        data, file = load_document(builder.file, builder.overrides(), (str(builder.file),))
        apply_overrides(data, overrides)
        return data, file
    if looks_like_path(source):
        path = Path(source)
        file = str(path)
        data = parse_yaml(read_text(path), file)
        base = path.parent
    else:
        file = "<string>"
        data = parse_yaml(str(source), file)
        base = Path.cwd()
    if not isinstance(data, YDict):
        raise SpecError([error("a spec is a mapping (name:, input:, layers:, ...)", "",
                               getattr(data, "loc", Location(file, 1, 1)))])
    if "extends" in data:
        parent_ref = data["extends"]
        loc = data.where("extends")
        if not isinstance(parent_ref, str):
            raise SpecError([error("'extends' takes a file path", "extends", loc, value=parent_ref)])
        if len(_chain) >= MAX_EXTENDS_DEPTH:
            raise SpecError([error(f"'extends' goes more than {MAX_EXTENDS_DEPTH} specs deep", "extends", loc,
                                   hint="a spec extends a spec that extends another ...; flatten the chain")])
        if zoo.is_name(parent_ref) and not (base / parent_ref).exists() and zoo.find(parent_ref) is not None:
            builder = zoo.find(parent_ref)        # a shipped spec by its zoo name: `extends: resnet50`
            parent, _ = load_document(builder.file, builder.overrides(), (*_chain, str(Path(file).resolve())))
            return _extend(data, parent, overrides)
        if not parent_ref.lower().endswith(SPEC_SUFFIXES):
            raise SpecError([error(f"'extends' names a spec (a {' or '.join(SPEC_SUFFIXES)} file, or a shipped "
                                   f"spec's name), not {_short(parent_ref)!r}", "extends", loc,
                                   hint="'archc zoo' lists the shipped specs")])
        try:
            parent_path = (base / parent_ref).resolve()
            exists = parent_path.is_file()
        except (OSError, ValueError, RuntimeError):       # a name too long, a NUL byte, a symlink loop, ...
            raise SpecError([error("'extends' does not name a readable file", "extends", loc,
                                   value=parent_ref[:80])]) from None
        key = str(parent_path)
        if key in _chain or str(Path(file).resolve()) == key:
            cycle = " -> ".join([*(Path(c).name for c in _chain), Path(file).name, parent_path.name])
            raise SpecError([error(f"'extends' makes a cycle: {cycle}", "extends", loc,
                                   hint="a spec cannot extend itself, directly or through others")])
        if not exists:
            raise SpecError([error(f"'extends' names a missing file: {parent_ref[:200]}", "extends", loc,
                                   hint=f"looked for {parent_path}")])
        shown = Path(os.path.normpath(base / parent_ref))    # as the user would write it, for messages
        parent, _ = load_document(shown, None, (*_chain, str(Path(file).resolve())))
        return _extend(data, parent, overrides)
    if "edits" in data:
        raise SpecError([error("'edits' change an inherited spec: add 'extends: PARENT.yaml'",
                               "edits", data.where("edits", True))])
    apply_overrides(data, overrides)
    return data, file


def _extend(data: YDict, parent: YDict, overrides: dict[str, Any] | list[str] | None) -> tuple[YDict, str]:
    """``data`` merged over the spec it extends (its claims dropped unless ``keep_claims``), then edited
    and overridden."""
    _refuse_what_is_no_spec(parent)
    if not data.get("keep_claims"):
        strip_claims(parent)        # the paper's numbers describe the parent, not the variant
    child = YDict(loc=data.loc)
    for k, v in data.items():
        if k not in LOAD_TIME_KEYS:
            child.put(k, v, data.where(k), data.where(k, True))
    merged = merge(parent, child)
    merged.loc = data.loc
    apply_edits(merged, data.get("edits"))
    apply_overrides(merged, overrides)
    return merged, data.loc.file


def _short(text: str, limit: int = 40) -> str:
    text = text.splitlines()[0] if text.strip() else text
    return text if len(text) <= limit else text[:limit] + "..."


def _refuse_what_is_no_spec(parent: YDict) -> None:
    """A file that 'extends' reaches and that is no spec is refused once, quoting at most a short excerpt
    of its first unknown key: a spec from anyone must not make archc print another file's lines."""
    unknown = [k for k in parent if k not in Document.model_fields and k not in LOAD_TIME_KEYS]
    if unknown:
        raise SpecError([error(f"{parent.loc.file} is not an archc spec: its key {_short(str(unknown[0]))!r} is "
                               "none of a spec's", "extends", parent.where(unknown[0], True),
                               hint="'extends' names a spec written for archc")])
