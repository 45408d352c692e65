"""What several commands share: option types, and turning a library error into a click error / exit code."""
from __future__ import annotations

import sys
from datetime import datetime

import click
from pydantic import BaseModel, ValidationError

from fraud.errors import FraudError, SettingsError
from fraud.settings import describe_validation_error


def date_option(ctx, param, value):
    """click callback: YYYY-MM-DD -> datetime.date."""
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date in YYYY-MM-DD form")


def default_of(model: type[BaseModel], field: str):
    """A settings model's default for a field: the one place defaults are defined (fraud.settings)."""
    return model.model_fields[field].default


def ranged(model: type[BaseModel], field: str, type_):
    """`type_` (int or float) as a click range carrying the settings field's bounds, so --help shows them
    (e.g. `INTEGER RANGE [1<=x<=365]`); other types unchanged."""
    if type_ not in (int, float):
        return type_
    bounds: dict = {}
    for c in model.model_fields[field].metadata:
        for attr, key, open_ in (("ge", "min", False), ("gt", "min", True), ("le", "max", False), ("lt", "max", True)):
            if getattr(c, attr, None) is not None:
                bounds[key] = getattr(c, attr)
                bounds[f"{key}_open"] = open_
    if not bounds:
        return type_
    return (click.IntRange if type_ is int else click.FloatRange)(**bounds)


def help_of(model: type[BaseModel], field: str, extra: str = "") -> str:
    info = model.model_fields[field]
    return " ".join(p for p in (info.description or "", extra, f"[default: {info.default}]") if p)


def fail(exc: FraudError) -> None:
    """Print a diagnosed error and exit with its code (fraud.errors)."""
    click.echo(f"Error: {exc}", err=True)
    sys.exit(exc.exit_code)


def build(model: type[BaseModel], values: dict, option_name=lambda f: "--" + f.replace("_", "-")):
    """model(**values), or exit 2 naming the options that are wrong."""
    try:
        return model(**values)
    except ValidationError as exc:
        fail(SettingsError(describe_validation_error(exc, lambda loc: option_name(str(loc[0])) if loc else "settings")))
