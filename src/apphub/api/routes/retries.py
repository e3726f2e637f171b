"""`POST /admin/retries/{events|deliveries|workflow-steps}/{id}/{cancel|force}`.

Durable retries that wait for their time: a rate-limited (deferred) event, a throttled
trigger delivery, a workflow step with a retry scheduled. `cancel` gives the retry up
(200, the record as it is now); `force` does it now, whatever held it back (202).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from apphub.api.auth import require
from apphub.api.schemas import GUARDED, NOT_FOUND, Data, ErrorBody
from apphub.api.state import Services
from apphub.automation.ingress import event_view
from apphub.automation.trigger_deliveries import cancel_delivery, force
from apphub.automation.triggers import announce_runs
from apphub.bus.frames import CONTROL_CHANNEL
from apphub.domain.base import ApiModel, utc_now
from apphub.domain.errors import ConflictError, NotFoundError
from apphub.domain.triggers import Delivery
from apphub.engine.services import EngineServices
from apphub.security import Principal
from apphub.store import retries as retry_store
from apphub.store import triggers as trigger_store
from apphub.store.rows import camel_row

router = APIRouter(prefix="/admin/retries", tags=["admin"])

Action = Literal["cancel", "force"]
Guard = Annotated[Principal, require("admin:write", "retry.change")]
RESPONSES = GUARDED | NOT_FOUND | {409: {"model": ErrorBody, "description": "Not waiting"}}


class RetryOutcome(ApiModel):
    kind: Literal["events", "deliveries", "workflow-steps"]
    id: str
    action: Action
    status: str
    """The record's status after the call (a forced one may still be on its way)."""
    record: dict[str, Any]


def _answer(outcome: dict[str, Any], action: Action) -> JSONResponse:
    body = Data[RetryOutcome].model_validate({"data": outcome}).model_dump(mode="json")
    return JSONResponse(body, status_code=202 if action == "force" else 200)


@router.post("/events/{event_id}/{action}", response_model=Data[RetryOutcome], responses=RESPONSES)
async def event_retry(event_id: str, action: Action, services: Services, _: Guard) -> JSONResponse:
    """A deferred event: `cancel` keeps it stored but never hands it on (status `canceled`);
    `force` processes it now, past its source's rate limit."""
    async with services.database.write() as connection:
        row = await retry_store.event(connection, event_id)
        if row is None:
            raise NotFoundError("event not found")
        if row.status != "deferred":
            raise ConflictError(f"event is {row.status}, not deferred", reason="not_waiting")
        if action == "cancel":
            await retry_store.cancel_deferred(connection, row.seq)
            row = await retry_store.event(connection, event_id)
        else:
            row = await retry_store.claim_deferred(connection, row.seq, utc_now())
    if action == "force":
        await services.ingress.process([row], acknowledge_now=True, forced=True)
    outcome = {"kind": "events", "id": event_id, "action": action, "status": row.status}
    return _answer(outcome | {"record": event_view(row)}, action)


@router.post(
    "/deliveries/{delivery_id}/{action}", response_model=Data[RetryOutcome], responses=RESPONSES
)
async def delivery_retry(
    delivery_id: str, action: Action, services: Services, _: Guard
) -> JSONResponse:
    """A throttled delivery: `cancel` records it `skipped`; `force` launches its run now,
    past the trigger's throttle and concurrency limits.

    Whether it is still throttled is decided by the change itself (a conditional update, or a
    read under the trigger's lock), never by an earlier unlocked read: a retry launching it
    at the same moment wins, and the operator gets 409."""
    now = utc_now()
    done = None
    async with services.database.write() as connection:
        row = await trigger_store.get_delivery(connection, delivery_id)
        if row is None:
            raise NotFoundError("delivery not found")
        if action == "cancel":
            changed = await cancel_delivery(connection, delivery_id, now)
        else:
            done = await force(connection, row.trigger_id, delivery_id, services.pause_rule(), now)
            changed = done is not None
        row = await trigger_store.get_delivery(connection, delivery_id)
        if row is None:  # its trigger was deleted meanwhile
            raise NotFoundError("delivery not found")
        if not changed:
            raise ConflictError(f"delivery is {row.status}, not throttled", reason="not_waiting")
    if done is not None:
        await announce_runs(services.workflow_queue, services.frames, done)
    delivery = Delivery.model_validate(camel_row(row._mapping)).model_dump(mode="json")
    outcome = {"kind": "deliveries", "id": delivery_id, "action": action, "status": row.status}
    return _answer(outcome | {"record": delivery}, action)


@router.post(
    "/workflow-steps/{step_id}/{action}", response_model=Data[RetryOutcome], responses=RESPONSES
)
async def step_retry(step_id: str, action: Action, services: Services, _: Guard) -> JSONResponse:
    """A step waiting to be retried (`retryState: scheduled`): `force` runs it now; `cancel`
    fails it (its run fails and its dependents are skipped, as when retries run out). A run a
    worker holds in memory is forced through the worker; cancel waits until it is released."""
    now = utc_now()
    async with services.database.write() as connection:
        row = await retry_store.step(connection, step_id)
        if row is None:
            raise NotFoundError("workflow step not found")
        if row.status != "pending" or row.retry_state != "scheduled":
            raise ConflictError("the step has no retry scheduled", reason="not_waiting")
        if action == "cancel" and row.claimed_by is not None:
            raise ConflictError(
                "a worker is driving the run; cancel when it waits", reason="run_held"
            )
        if action == "cancel":
            values = {
                "status": "failed",
                "retry_state": None,
                "next_attempt_at": None,
                "error_message": f"{row.error_message or 'failed'} (retry canceled by an operator)",
                "completed_at": now,
            }
        else:
            values = {"next_attempt_at": now}
        await retry_store.change_step(connection, row, values, now)
        row = await retry_store.step(connection, step_id)
    await _wake_run(services, row.workflow_run_id, row.step_id)
    record = {"stepId": row.step_id, "workflowRunId": row.workflow_run_id, "status": row.status}
    outcome = {"kind": "workflow-steps", "id": step_id, "action": action, "status": row.status}
    return _answer(outcome | {"record": record}, action)


async def _wake_run(services: EngineServices, run_id: str, step_id: str) -> None:
    """A released run is enqueued; a worker holding it hears of the change."""
    await services.workflow_queue.enqueue(run_id)
    message = {"type": "force-retry", "runId": run_id, "stepId": step_id}
    await services.broadcaster.publish(CONTROL_CHANNEL, message)
