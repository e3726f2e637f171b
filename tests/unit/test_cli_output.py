"""The CLI's table cells: nulls, flags and user text that looks like rich markup."""

from __future__ import annotations

from rich.console import Console

from apphub.cli.output import field, payload_cell, table_of, text


def rendered(rows: list[dict[str, object]]) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(table_of(rows, [("name", field("name")), ("source", field("src", "(any)"))]))
    return console.export_text()


def test_user_text_that_looks_like_markup_is_printed_as_written() -> None:
    output = rendered([{"name": "[red]boom[/red]", "src": None}])
    assert "[red]boom[/red]" in output
    assert "(any)" in output


def test_cells_say_yes_or_no_for_flags_and_stringify_numbers() -> None:
    assert (text(True), text(False), text(3), text(None)) == ("yes", "no", "3", "")


def test_a_long_payload_is_cut_to_one_line() -> None:
    cell = payload_cell({"key": "x" * 200})
    assert len(cell) == 60
    assert cell.endswith("…")
    assert cell.startswith('{"key":"xxx')
