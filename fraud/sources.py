"""Where the transactions table comes from: a folder of CSV files or an SQLAlchemy URL (a database).

The one dispatch point, so that neither reader knows of the other: fraud.ingest reads CSV folders and
standardises any raw frame; fraud.sql_source reads the database with a point-in-time join and returns the same
raw CSV columns.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas takes most of a second to import: `fraudctl --help` and the settings need none of it
    import pandas as pd


def is_url(source: str) -> bool:
    """An SQLAlchemy URL (sqlite:///..., postgresql://...) rather than a directory of CSVs."""
    return "://" in str(source)


def url_password(source: str) -> str | None:
    """The password a database URL carries (None without one), read with the standard library only."""
    from urllib.parse import urlsplit

    if not is_url(source):
        return None
    try:
        return urlsplit(str(source)).password or None
    except ValueError:  # unparsable: the reader will say so
        return None


def read_source(source: str) -> "pd.DataFrame":
    """The raw transactions table (strings, the contract's column names) of a CSV directory or a database URL."""
    if is_url(source):
        from fraud import sql_source

        return sql_source.read_transactions(str(source))
    from fraud import ingest

    return ingest.read_csv_dir(source)


def display(source: str) -> str:
    """The source as it may be printed or logged: a database URL without its password."""
    if is_url(source):
        from fraud.sql_source import redact

        return redact(str(source))
    return str(source)
