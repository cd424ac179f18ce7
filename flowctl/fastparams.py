"""Convert plain command-line parameters without pydantic, for start-up time.

typer 0.29 coerces every non-boolean parameter through a pydantic TypeAdapter,
and importing pydantic plus building the adapters costs about 0.3 s per run:
more than the whole start-up budget of `flowctl pack`. Parameters annotated
str, int, float, bool or Path (or `X | None`, or `list[X]` of those) without ranges
or choices are converted here instead; everything else still goes through
typer's own coercion. `install()` is idempotent and a no-op when typer's
internals are not the ones this was written against (tests/flowctl/test_app.py
then fails on the start-up guard rather than the CLI breaking).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
               "off": False}


def _bool(value: Any) -> bool:
    return _BOOL_WORDS[str(value).strip().lower()]


_SIMPLE: dict[Any, Callable[[Any], Any]] = {str: str, int: int, float: float, Path: Path, bool: _bool}
_NAMES = {str: "string", int: "integer", float: "number", Path: "path", bool: "boolean"}


def _plain_target(annotation: Any) -> tuple[Any, bool] | None:
    """(scalar type, is_list) when `annotation` is one this module converts, else None."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            return None
        annotation, origin = args[0], get_origin(args[0])
    if origin is list:
        (item,) = get_args(annotation) or (None,)
        return (item, True) if item in _SIMPLE else None
    return (annotation, False) if annotation in _SIMPLE else None


def install() -> None:
    """Route plain parameters of every typer command through the light converter."""
    try:
        from typer import core
        from typer._click.exceptions import BadParameter
        from typer._coercion import RuntimeParam, build_runtime_param
    except ImportError:
        return
    if getattr(core._TyperParameter, "_flowctl_light", False):
        return

    @dataclass(frozen=True)
    class LightRuntimeParam(RuntimeParam):
        target: Any = None
        is_list: bool = False

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if self.is_list:
                return [self._one(v, param, ctx) for v in value]
            return self._one(value, param, ctx)

        def _one(self, value: Any, param: Any, ctx: Any) -> Any:
            if isinstance(value, self.target) and not (self.target is int and isinstance(value, bool)):
                return value
            try:
                return _SIMPLE[self.target](value)
            except (TypeError, ValueError, KeyError):
                raise BadParameter(f"{value!r} is not a valid {_NAMES[self.target]}.",
                                   ctx=ctx, param=param) from None

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            desc = self.type_descriptor
            info = desc.parameter_info
            plain = _plain_target(desc.annotation)
            ranged = any(getattr(info, k, None) is not None for k in ("min", "max"))
            if plain is None or ranged or desc.is_file or desc.is_choice or getattr(info, "parser", None) \
                    or getattr(info, "click_type", None):
                self._runtime_param = build_runtime_param(desc)
            else:
                self._runtime_param = LightRuntimeParam(parameter_info=info, annotation=desc.annotation,
                                                        target=plain[0], is_list=plain[1])
        return self._runtime_param

    # Patching typer's class is this module's purpose; its stubs rightly know nothing of it.
    core._TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]
    core._TyperParameter._flowctl_light = True  # type: ignore[attr-defined]
