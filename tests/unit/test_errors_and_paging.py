"""Error field paths and opaque cursors."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apphub.api.errors import field_path
from apphub.domain.paging import InvalidCursorError, decode_cursor, encode_cursor


@pytest.mark.parametrize(
    ("location", "path"),
    [
        (("body", "steps", 0, "job", "dependsOn"), "steps[0].dependsOn"),
        (
            ("body", "steps", 2, "fanout", "template", "service", "request", "path"),
            "steps[2].template.request.path",
        ),
        (
            ("body", "steps", 0, "job", "produces", 1, "partitioning", "static", "keys"),
            "steps[0].produces[1].partitioning.keys",
        ),
        (("query", "limit"), "limit"),
        (("body",), "body"),
        (("body", "metadata", "job"), "metadata.job"),
    ],
)
def test_field_paths_read_like_the_request(location: tuple[int | str, ...], path: str) -> None:
    assert field_path(location) == path


@given(
    st.dictionaries(
        st.sampled_from(["id", "at", "key"]),
        st.one_of(st.integers(), st.text(string.printable, max_size=30)),
    )
)
def test_cursor_round_trips(position: dict[str, object]) -> None:
    assert {k: v for k, v in decode_cursor(encode_cursor(position)).items() if k != "v"} == position


@pytest.mark.parametrize("cursor", ["", "!!!", "bm90IGpzb24", "eyJ2IjoyfQ", "WzFd"])
def test_foreign_cursors_are_rejected(cursor: str) -> None:
    with pytest.raises(InvalidCursorError):
        decode_cursor(cursor)
