"""How the CLI prints: one console, JSON when asked for, and tables of the API's rows.

A list command names its columns once; `print_rows` turns rows into a table or, with
`--json`, prints them as the API sent them, so scripts read exactly what clients read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

PAYLOAD_WIDTH = 60

Row = Mapping[str, Any]
Cell = Callable[[Row], str]
Column = tuple[str, Cell]


def print_json(value: Any) -> None:
    console.print_json(json.dumps(value))


def yes_no(flag: Any) -> str:
    return "yes" if flag else "no"


def text(value: Any, empty: str = "") -> str:
    """A value as a table cell: `empty` for null, yes/no for flags, markup escaped (names and
    messages come from users and must not be read as rich styles)."""
    if value is None:
        return empty
    if isinstance(value, bool):
        return yes_no(value)
    return escape(str(value))


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def payload_cell(payload: Any) -> str:
    """Compact JSON, cut so a row stays on one line; escaped so brackets are not markup."""
    cell = compact_json(payload)
    if len(cell) > PAYLOAD_WIDTH:
        cell = cell[: PAYLOAD_WIDTH - 1] + "…"
    return escape(cell)


def field(name: str, empty: str = "") -> Cell:
    """The column that shows a row's `name` as it is."""
    return lambda row: text(row[name], empty)


def table_of(rows: Sequence[Row], columns: Sequence[Column]) -> Table:
    table = Table(*(header for header, _ in columns))
    for row in rows:
        table.add_row(*(cell(row) for _, cell in columns))
    return table


def print_rows(rows: Sequence[Row], columns: Sequence[Column], *, as_json: bool) -> None:
    """A list command's answer: JSON as the API sent it, or a table of `columns`."""
    if as_json:
        print_json(rows)
    else:
        console.print(table_of(rows, columns))
