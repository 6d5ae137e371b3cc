"""The resolver's references by name, the outputs and the claims (a part of :class:`~archcompiler.spec.resolve.Resolver`)."""

from __future__ import annotations

import keyword
from typing import Any

from pydantic import ValidationError

from ...errors import Location, error
from ..base import suggest
from ..diagnose import pydantic_errors
from ..layers import Claims
from ..limits import MAX_NAME_CHARS
from ..resolved import Output
from ..source import YDict, locate
from .scope import _OUTPUT_NAME, BLOCK_INPUT, NET_INPUT, _Ref, _Scope


class References:
    """The resolver's references by name; its state is :class:`Resolver`'s."""

    def _claim_name(self, name: str, scope: _Scope, where: Location, path: str) -> str | None:
        if scope.block_input is not None and name == BLOCK_INPUT:
            self.errors.append(error(f"{BLOCK_INPUT!r} names the block's input; a layer cannot use it",
                                     path, where))
            return None
        if scope.block_input is None and name == NET_INPUT:
            self.errors.append(error(f"{NET_INPUT!r} names the network's input; a layer cannot use it",
                                     path, where))
            return None
        if "/" in name:
            self.errors.append(error(f"layer name {name!r} may not contain '/'", path, where))
            return None
        if name in scope.local:
            first = scope.local_loc[name]
            self.errors.append(error(f"duplicate layer name {name!r} (first defined at line {first.line})",
                                     path, where, value=name, hint="every layer needs its own name"))
            return None
        return scope.prefix + name

    def _claim_values(self, claims: Any, scope: _Scope) -> Any:
        """``claims`` with each value that names a parameter replaced by its value: a table of variants
        gives each column's claims (ShuffleNetV2's ``output: stage2_out``)."""
        if not isinstance(claims, dict):
            return claims
        out = YDict(loc=claims.loc) if isinstance(claims, YDict) else {}   # a copy: the document stays
        for key, value in claims.items():
            named = scope.values.get(value) if isinstance(value, str) else None
            if isinstance(named, (str, int)) and not isinstance(named, bool):
                self.used.add(value)
                value = named
            if isinstance(out, YDict):
                out.put(key, value, claims.where(key), claims.where(key, key_only=True))
            else:
                out[key] = value
        return out

    def _claims(self, claims: Any, logical: str, where: Location, scope: _Scope | None = None) -> Claims | None:
        """A row's claims, validated (errors located at the claim, or at the row)."""
        if not claims:
            return None
        if scope is not None:
            claims = self._claim_values(claims, scope)
        try:
            return Claims.model_validate(claims)
        except ValidationError as exc:
            self.errors += pydantic_errors(exc, claims, f"{logical}.claims", fallback=where)
            return None

    # ------------------------------------------------------------------ references
    def _resolve_refs(self) -> None:
        block_inputs: dict[str, str] = {}
        # block inputs first: their targets may be layers of the outer scope
        for ref in self.pending:
            if ref.placeholder is not None:
                target = self._target(ref)
                if target is not None:
                    block_inputs[ref.placeholder] = target

        def follow(name: str) -> str | None:
            seen = set()
            while name.startswith("@"):
                if name in seen or name not in block_inputs:
                    return None
                seen.add(name)
                name = block_inputs[name]
            return name

        inputs: dict[int, list[str | None]] = {}
        for ref in self.pending:
            if ref.layer is None:
                continue
            target = self._target(ref)
            if target is not None and target.startswith("@"):
                target = follow(target)
            inputs.setdefault(ref.layer, []).append(target)
        for index, names in inputs.items():
            if any(n is None for n in names):
                continue
            layer = self.layers[index]
            object.__setattr__(layer, "inputs", tuple(names))

    def _target(self, ref: _Ref) -> str | None:
        """The full name a reference resolves to (the previous layer's needs no lookup)."""
        return ref.name if ref.path is None else self._lookup(ref.name, ref.scope, ref.loc, ref.path)

    def _lookup(self, ref: str, scope: _Scope, loc: Location, path: str) -> str | None:
        """The full name ``ref`` stands for once every name is known, or a located error."""
        found = self._peek(ref, scope)
        if found is not None:
            return found
        if ref in scope.failed:
            return None                 # its definition's own error says it: no follow-on error here
        choices = set(scope.local) | {BLOCK_INPUT if scope.block_input else NET_INPUT}
        self.errors.append(error(f"reference to undefined layer {ref!r}", path, loc, value=ref,
                                 hint=suggest(ref, choices)))
        return None

    # ------------------------------------------------------------------ outputs
    def _outputs(self, top: _Scope) -> dict[str, Output]:
        m = self.model
        outs: dict[str, Output] = {}
        if not self.layers:
            return outs
        if not m.outputs:
            return {"main": Output("main", self.layers[-1].name, m.loss, 1.0, False, self.doc.loc)}
        for name, out in m.outputs.items():
            if not _OUTPUT_NAME.fullmatch(name) or keyword.iskeyword(name) or len(name) > MAX_NAME_CHARS:
                self.errors.append(error(f"output name {name[:60]!r} is not a Python identifier", f"outputs.{name}",
                                         locate(self.doc, ("outputs", name), key=True), value=name,
                                         hint="outputs are fields of the model's named tuple: use letters, "
                                              "digits and _, starting with a letter"))
                continue
            loc = locate(self.doc, ("outputs", name, "layer"))
            target = self._lookup(out.layer, top, loc, f"outputs.{name}.layer")
            if target is None:
                continue
            outs[name] = Output(name, target, out.loss or m.loss, out.weight, out.training_only, loc)
        if outs and all(o.training_only for o in outs.values()):
            self.errors.append(error("every output is training_only: nothing is left for inference",
                                     "outputs", locate(self.doc, ("outputs",)),
                                     hint="mark the main output training_only: false"))
        return outs
