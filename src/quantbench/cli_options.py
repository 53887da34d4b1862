"""Command-line options made from RunConfig's fields: one definition, many faces.

`config_command(func, sections)` returns a function typer can register whose options are the
fields of those RunConfig sections (their flat names, help text and panels); typer calls it
with the values and it calls `func(ctx, given, values)`, where `given` holds the names the user
typed (so that a sweep file's value is only overridden by an option actually given).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Optional

import typer

from quantbench.runconfig import FIELDS, flag_of


def _option(name: str):
    section, f = FIELDS[name]
    meta = f.metadata
    kind = meta["kind"]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    decls = [flag_of(name)] + ([meta["short"]] if meta.get("short") else [])
    extra = {"help": meta["help"], "rich_help_panel": meta.get("panel")}
    if kind in ("list", "names"):
        text = ",".join(str(v) for v in default) if default else None
        return Optional[str], typer.Option(text, *decls, **extra)
    if kind == "flag":
        return bool, typer.Option(default, *decls, **extra)
    if kind == "tristate":
        flag = flag_of(name)
        return Optional[bool], typer.Option(default, f"{flag}/--no-{flag[2:]}", **extra)
    hint = typing.get_type_hints(_section_class(section))[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = hint if not args else (str if str in args else args[0])
    if default is None or args:
        base = Optional[base]
    return base, typer.Option(default, *decls, **extra)


def _section_class(section: str):
    from quantbench.runconfig import SECTIONS

    return SECTIONS[section]


def names_of(sections: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[str]:
    return [n for n, (s, _) in FIELDS.items() if s in sections and n not in skip]


def config_command(func, names: list[str], leading: list[inspect.Parameter] = ()):
    """A function with one keyword parameter per RunConfig field in `names` (plus `leading`
    ones, e.g. a file argument) that calls func(ctx, given, values, **leading)."""
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=typer.Context)]
    params += list(leading)
    annotations = {"ctx": typer.Context}
    for p in leading:
        annotations[p.name] = p.annotation
    for name in names:
        annotation, default = _option(name)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=annotation))
        annotations[name] = annotation
    lead = {p.name for p in leading}

    def command(ctx: typer.Context, **values):
        given = set()
        for name in names:
            source = ctx.get_parameter_source(name)
            # typer vendors its own click: compare the source by the enum's name
            if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
                given.add(name)
        fixed = {k: values.pop(k) for k in list(values) if k in lead}
        return func(ctx, given, values, **fixed)

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = annotations
    command.__doc__ = func.__doc__
    command.__name__ = func.__name__
    return command
