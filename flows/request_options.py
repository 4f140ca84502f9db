"""Command-line options generated from the request models (flows.request): each field is one `--flag`, with the
field's description as its help, its type, choices and default; nothing restates them."""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from attn_audit import models


class MethodsAction(argparse.Action):
    """--method NAME (repeatable), --methods A B or --methods A,B: all add up, in order, once each. A method takes
    parameters as NAME:KEY=VALUE[,KEY=VALUE] (the comma-separated KEY=VALUE parts belong to the method before)."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = list(getattr(namespace, self.dest) or [])
        for value in values:
            for spec in split_methods(value):
                if spec not in current:
                    current.append(spec)
        setattr(namespace, self.dest, current)


def split_methods(value: str) -> list[str]:
    """'a,b:k=1,j=2,c' -> ['a', 'b:k=1,j=2', 'c']."""
    specs: list[str] = []
    for part in filter(None, value.split(",")):
        if specs and "=" in part and ":" not in part:
            specs[-1] += f",{part}"
        else:
            specs.append(part)
    return specs


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser, spec: type[BaseModel], *, required: tuple[str, ...] = (),
                skip: tuple[str, ...] = (), methods_default: str | None = None) -> None:
    """One option per field of `spec` (minus `skip`); options not given stay None (the request's default)."""
    for name, info in spec.model_fields.items():
        if name in skip:
            continue
        if name == "methods":
            parser.add_argument("--method", "--methods", action=MethodsAction, nargs="+", dest="methods",
                                metavar="NAME", help=f"repeatable, or several at once (A B or A,B); default "
                                f"{methods_default or 'the attention methods'}. Available: "
                                f"{', '.join(models.available_methods())}. Parameters: NAME:KEY=VALUE[,KEY=VALUE], "
                                "e.g. chefer2021:start_layer=-1 (see `attn-audit methods`)")
            continue
        kind, choices, help_text = *_kind(info.annotation), _help(info)
        if kind is bool:
            parser.add_argument(flag(name), action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(flag(name), type=kind, choices=choices, required=name in required,
                                metavar=None if choices else "JSON|FILE" if name == "label_map" else name.upper(),
                                help=help_text)


def given(args: argparse.Namespace, spec: type[BaseModel]) -> dict[str, Any]:
    """The fields of `spec` the command line set."""
    return {k: getattr(args, k) for k in spec.model_fields if getattr(args, k, None) is not None}


def _help(info: FieldInfo) -> str:
    text = info.description or ""
    if info.is_required() or info.default in (None, (), False) or "default" in text:
        return text
    return f"{text} (default {info.default})"


def _kind(annotation) -> tuple[type, list | None]:
    """The argparse type of a field: bool, int, float or str (str | int targets, JSON label maps: parsed later)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return str, list(typing.get_args(annotation))
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return (args[0], None) if len(args) == 1 else (str, None)
    return annotation, None
