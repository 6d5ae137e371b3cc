"""The resolver's conditions (``when:``) and the shapes they ask (a part of :class:`~archcompiler.spec.resolve.Resolver`)."""

from __future__ import annotations

from typing import Any

from ...errors import Location, error
from .. import expr
from ..base import suggest
from .scope import BLOCK_INPUT, NET_INPUT, SHAPE_NAMES, _Ref, _Scope, layer_shape


class Conditions:
    """The resolver's conditions (``when:``) and the shapes they ask; its state is :class:`Resolver`'s."""

    def _skip(self, name: str, inputs: list[str] | None, scope: _Scope, previous: str, where: Location,
              logical: str) -> str:
        """A layer (or block use) whose condition is false does not exist: what reads it reads its
        input (its first, for add and concat) instead."""
        if self._claim_name(name, scope, where, logical) is None:
            return previous
        target = previous
        if inputs:
            target = self._peek(inputs[0], scope)
            if target is None:
                self.errors.append(error(f"{name!r} reads {inputs[0]!r}, which is not defined before it; a layer "
                                         "with 'when' reads only layers above it", logical, where,
                                         value=inputs[0], hint="when the condition is false, whatever reads "
                                         f"{name!r} reads {inputs[0]!r} instead: it must be known by then"))
                scope.failed.add(name)
                return previous
        scope.local[name] = target
        scope.local_loc[name] = where
        return previous

    def _condition(self, text: Any, scope: _Scope, where: Location, path: str) -> bool | None:
        """The value of a ``when`` condition, or None after reporting why it has none."""
        if isinstance(text, bool):
            return text
        if not isinstance(text, str):
            self.errors.append(error(f"'when' takes a condition such as \"stride == 1\", not {text!r}", path, where,
                                     value=text))
            return None
        values = scope.values
        try:
            mentioned = expr.names(text)
            wanted = mentioned & set(SHAPE_NAMES)
        except expr.ExprError as exc:
            self.errors.append(error(str(exc), path, where, value=text))
            return None
        wanted -= set(values)
        if wanted:
            if scope.block_input is None:
                self.errors.append(error(f"{sorted(wanted)[0]!r} is the shape of a block's input; at the top level "
                                         "there is none", path, where, value=text,
                                         hint="conditions on the input's shape belong in a block's layers"))
                return None
            shape = self._shape(scope.block_input)
            if shape is None and self.refused:
                self.errors.append(self.refused[0])     # the cause: a layer above refused its input's shape
                return None
            if shape is None or len(shape) not in (3, 4):      # an image, or a clip (C, T, H, W)
                self.errors.append(error("cannot decide the condition: the shape of the block's input is not "
                                         "known here", path, where, value=text,
                                         hint="the layers before the block must be valid, read only layers "
                                              "above them, and give an image (C, H, W) or a clip (C, T, H, W)"))
                return None
            values = {**values, **dict(zip(SHAPE_NAMES, (shape[0], *shape[-2:])))}
        words = {w: w == "true" for w in ("true", "false") if w in mentioned}    # YAML's spelling, quoted
        values = {**words, **values}
        try:
            result = expr.evaluate(text, values, self.used)
        except expr.ExprError as exc:
            if exc.unknown in self.failed_params:
                return None
            hint = None
            if exc.unknown is not None:
                choices = set(values) | set(SHAPE_NAMES if scope.block_input is not None else ())
                close = suggest(exc.unknown, choices)
                hint = close if close.startswith("did you mean") else (
                    "a condition reads the block's arguments, the parameters, i and N (the block's position) "
                    "and the block's input's " + ", ".join(SHAPE_NAMES))
            self.errors.append(error(str(exc), path, where, value=text, hint=hint))
            return None
        if not isinstance(result, bool):
            self.errors.append(error(f"'when' must be true or false; {text!r} gives {result!r}", path, where,
                                     value=text, hint="compare, e.g. \"stride != 1 or in_channels != out\""))
            return None
        return result

    # ------------------------------------------------------------------ shapes, for conditions
    def _peek(self, ref: str, scope: _Scope) -> str | None:
        """The full name ``ref`` stands for now, without reporting anything (None: not known yet)."""
        if ref.startswith("@"):
            return ref
        if scope.block_input is not None and ref == BLOCK_INPUT:
            return scope.block_input
        if scope.block_input is None and ref == NET_INPUT:
            return NET_INPUT
        if ref in scope.local:
            return scope.local[ref]
        if scope.block_input is None:
            if ref in self.index:
                return ref
            inst = self.instances.get(ref)
            if inst is not None:
                return inst.output
        return None

    def _peek_ref(self, ref: _Ref | None) -> str | None:
        if ref is None:
            return None
        return ref.name if ref.path is None else self._peek(ref.name, ref.scope)

    def _shape(self, name: str) -> Any:
        """The output shape of ``name`` (a layer, a block's input or the network's input) from the
        layers defined so far; None where it cannot be known (an error elsewhere, a later layer)."""
        cache, stack, visiting = self.shapes, [name], set()
        while stack:
            n = stack[-1]
            if n in cache:
                stack.pop()
                continue
            visiting.add(n)
            if n == NET_INPUT:
                cache[n] = self.input
                continue
            if n.startswith("@"):
                deps = [self._peek_ref(self.input_refs.get(n))]
            elif n in self.index:
                deps = [self._peek_ref(r) for r in self.layer_refs.get(self.index[n], [])]
                deps = deps or [None]
            else:
                deps = [None]
            if any(d is None or (d in visiting and d not in cache) for d in deps):
                cache[n] = None
                continue
            missing = [d for d in deps if d not in cache]
            if missing:
                stack.extend(missing)
                continue
            shapes = [cache[d] for d in deps]
            if any(sh is None for sh in shapes):
                cache[n] = None
            elif n.startswith("@"):
                cache[n] = shapes[0]
            else:
                layer = self.layers[self.index[n]]
                try:
                    cache[n] = tuple(layer_shape(layer.spec, shapes))
                except ValueError as exc:       # the op refuses these shapes: said at the layer
                    cache[n] = None
                    self.refused.append(error(str(exc), layer.name, layer.loc))
                except (TypeError, KeyError):
                    cache[n] = None
        return cache[name]
