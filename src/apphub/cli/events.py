"""`apphub events …`: run the ingress process, publish events, query the log, tail it live."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any
from urllib.parse import urlencode

import typer
from rich.markup import escape

from apphub.cli.client import ApiClient, CliError, api_client
from apphub.cli.output import (
    JsonOption,
    compact_json,
    console,
    err_console,
    field,
    payload_cell,
    print_json,
    table_of,
)
from apphub.cli.processes import run_process

events = typer.Typer(
    help="Events: publish them, query the log, tail them live; alone, run the ingress process.",
    invoke_without_command=True,
)

EVENT_TOPIC = "workflow.event.received"
ACK = "connection.ack"


# --- the ingress process ----------------------------------------------------------------


@events.callback()
def ingress(ctx: typer.Context) -> None:
    """Alone, run the event ingress process (scaled mode); SIGTERM or Ctrl-C stops it."""
    if ctx.invoked_subcommand is not None:
        return  # a subcommand runs instead; the group itself does nothing then
    from apphub.automation.ingress_worker import IngressWorker

    run_process(
        "events",
        lambda services: IngressWorker(
            services.settings, services.database, services.ingress
        ).run(),
    )


# --- publish ----------------------------------------------------------------------------


def _parse_payload(raw: str | None) -> Any:
    """Checked before any request, so a typo never reaches the server as a string."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise CliError(f"--payload is not valid JSON: {error}") from None


@events.command("publish")
def publish(
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="The event type.")],
    source: Annotated[str, typer.Option("--source", help="Who publishes it.")],
    payload: Annotated[str | None, typer.Option("--payload", help="A JSON payload.")] = None,
    correlation_id: Annotated[str | None, typer.Option("--correlation-id")] = None,
    event_id: Annotated[
        str | None, typer.Option("--id", help="The event id (a replayed id changes nothing).")
    ] = None,
) -> None:
    """Publish one event (POST /events)."""
    body: dict[str, Any] = {"type": event_type, "source": source}
    parsed = _parse_payload(payload)
    if parsed is not None:
        body["payload"] = parsed
    if correlation_id:
        body["correlationId"] = correlation_id
    if event_id:
        body["id"] = event_id
    accepted = api_client().post("/events", body)
    console.print(f"event [bold]{escape(accepted['event']['id'])}[/bold] accepted")


# --- query ------------------------------------------------------------------------------


def _query_params(filters: dict[str, str | None], limit: int | None) -> dict[str, Any]:
    """Only the options given, so the server keeps its own defaults for the rest."""
    params: dict[str, Any] = {key: value for key, value in filters.items() if value is not None}
    if limit is not None:
        params["limit"] = limit
    return params


EVENT_COLUMNS = [
    ("occurred at", field("occurredAt")),
    ("type", field("type")),
    ("source", field("source")),
    ("severity", field("severity")),
    ("id", field("id")),
    ("payload", lambda row: payload_cell(row["payload"])),
]


@events.command("query")
def query(
    event_type: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    correlation_id: Annotated[str | None, typer.Option("--correlation-id")] = None,
    severity: Annotated[
        str | None, typer.Option(help="critical, error, warning, info or debug.")
    ] = None,
    occurred_from: Annotated[
        str | None, typer.Option("--from", help="Occurred at or after (ISO 8601).")
    ] = None,
    occurred_to: Annotated[
        str | None, typer.Option("--to", help="Occurred at or before (ISO 8601).")
    ] = None,
    json_path: Annotated[
        str | None, typer.Option("--json-path", help="A JSONPath the payload must match.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="How many (newest first).")] = None,
    cursor: Annotated[str | None, typer.Option(help="Continue from a previous page.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Query the event log (GET /admin/events), newest first."""
    filters = {
        "type": event_type,
        "source": source,
        "correlationId": correlation_id,
        "severity": severity,
        "from": occurred_from,
        "to": occurred_to,
        "jsonPath": json_path,
        "cursor": cursor,
    }
    data = api_client().get("/admin/events", params=_query_params(filters, limit))
    if as_json:
        print_json(data)
        return
    console.print(table_of(data["events"], EVENT_COLUMNS))
    next_cursor = data["page"].get("nextCursor")
    if next_cursor:
        console.print(f"next page: --cursor {escape(next_cursor)}", soft_wrap=True)


# --- tail -------------------------------------------------------------------------------


def _ws_url(client: ApiClient, after: str | None) -> str:
    """`http(s)://` becomes `ws(s)://`; only event frames are asked for."""
    base = client.base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    query = {"topics": EVENT_TOPIC}
    if after:
        query["after"] = after
    return f"{base}/ws?{urlencode(query)}"


def _matches(event: dict[str, Any], event_type: str | None, source: str | None) -> bool:
    return (event_type is None or event.get("type") == event_type) and (
        source is None or event.get("source") == source
    )


def _event_line(event: dict[str, Any]) -> str:
    parts = ("occurredAt", "type", "source", "severity")
    return "  ".join(
        [*(str(event.get(part, "")) for part in parts), compact_json(event["payload"])]
    )


def _frame_event(raw: str | bytes) -> dict[str, Any] | None:
    """The event a frame carries; None for other frames; an `error` frame ends the tail."""
    frame = json.loads(raw)
    if frame.get("type") == "error":
        raise CliError(str((frame.get("data") or {}).get("message", "the server sent an error")))
    if frame.get("type") != EVENT_TOPIC:
        return None
    data = frame.get("data")
    return data if isinstance(data, dict) else None


async def _tail(
    url: str, token: str | None, keep: Callable[[dict[str, Any]], bool], count: int | None
) -> None:
    """Print each kept event as it arrives; return after `count` of them (when given)."""
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(url, additional_headers=headers) as socket:
        ack = json.loads(await socket.recv())
        if ack.get("type") != ACK:
            raise CliError(f"unexpected first frame from {url}: {ack.get('type')!r}")
        err_console.print(f"[dim]tailing {escape(url)} (Ctrl-C stops)[/dim]", soft_wrap=True)
        printed = 0
        while count is None or printed < count:
            event = _frame_event(await socket.recv())
            if event is not None and keep(event):
                console.print(_event_line(event), markup=False, highlight=False, soft_wrap=True)
                printed += 1


@events.command("tail")
def tail(
    event_type: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    after: Annotated[
        str | None, typer.Option(help="First replay the events stored after this event id.")
    ] = None,
    count: Annotated[int | None, typer.Option(hidden=True, min=1)] = None,
) -> None:
    """Print events live as the server receives them, until Ctrl-C."""
    from websockets.exceptions import ConnectionClosed, WebSocketException

    client = api_client()
    url = _ws_url(client, after)
    keep = partial(_matches, event_type=event_type, source=source)
    try:
        asyncio.run(_tail(url, client.token, keep, count))
    except KeyboardInterrupt:
        return  # Ctrl-C is how a tail ends
    except ConnectionClosed as closed:
        raise CliError(f"the connection to {url} closed ({closed})") from None
    except (OSError, TimeoutError, WebSocketException) as error:
        raise CliError(
            f"cannot reach apphub at {url} ({error}); is `apphub serve` running?"
        ) from None
