"""Reading `result.assets`: which productions a finished step recorded, or why it must fail.

Only assets the step declares in `produces` are recorded (ids compared case-insensitively);
others are reported as undeclared and left out. A payload that breaks the declared schema,
or a partition key the partitioning does not allow, fails the step and records nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jsonschema import Draft202012Validator

from apphub.domain.assets import AssetDeclaration, asset_key
from apphub.domain.base import to_ms
from apphub.domain.partitions import key_problem


@dataclass(frozen=True, slots=True)
class Production:
    """One recorded version of an asset."""

    declaration: AssetDeclaration
    payload: Any
    produced_at: datetime
    partition_key: str | None

    @property
    def asset_id(self) -> str:
        return self.declaration.asset_id

    @property
    def asset_key(self) -> str:
        return asset_key(self.declaration.asset_id)


@dataclass(frozen=True, slots=True)
class Capture:
    productions: list[Production] = field(default_factory=list)
    undeclared: list[str] = field(default_factory=list)
    error: str | None = None


def capture_assets(
    declarations: Sequence[AssetDeclaration],
    result: Any,
    run_partition_key: str | None,
    now: datetime,
) -> Capture:
    entries = result.get("assets") if isinstance(result, dict) else None
    if entries is None:
        return Capture()
    if not isinstance(entries, list):
        return Capture(error="result.assets must be a list of {assetId, payload, ...}")
    declared = {asset_key(d.asset_id): d for d in declarations}
    productions: list[Production] = []
    undeclared: list[str] = []
    seen: set[tuple[str, str | None]] = set()
    for index, entry in enumerate(entries):
        where = f"result.assets[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("assetId"), str):
            return Capture(error=f"{where} must be an object with an assetId")
        declaration = declared.get(asset_key(entry["assetId"]))
        if declaration is None:
            undeclared.append(entry["assetId"])
            continue
        production, problem = _production(declaration, entry, run_partition_key, now, where)
        if problem is not None:
            return Capture(error=problem)
        assert production is not None
        identity = (production.asset_key, production.partition_key)
        if identity in seen:
            return Capture(
                error=f"{where}: asset {production.asset_id!r} is listed twice"
                + _partition_note(production.partition_key)
            )
        seen.add(identity)
        productions.append(production)
    return Capture(productions=productions, undeclared=undeclared)


def _production(
    declaration: AssetDeclaration,
    entry: dict[str, Any],
    run_partition_key: str | None,
    now: datetime,
    where: str,
) -> tuple[Production | None, str | None]:
    name = declaration.asset_id
    produced_at = _moment(entry.get("producedAt"), now)
    if produced_at is None:
        return None, f"{where}.producedAt is not an ISO-8601 time: {entry.get('producedAt')!r}"
    partition_key = entry.get("partitionKey") or run_partition_key
    if partition_key is not None and not isinstance(partition_key, str):
        return None, f"{where}.partitionKey must be a string"
    if declaration.partitioning is not None:
        problem = key_problem(declaration.partitioning, partition_key)
        if problem is not None:
            return None, f"asset {name!r}: {problem}"
    payload = entry.get("payload")
    if declaration.asset_schema is not None:
        problem = schema_problem(declaration.asset_schema, payload)
        if problem is not None:
            return None, f"asset {name!r} payload does not match its schema: {problem}"
    return Production(declaration, payload, produced_at, partition_key), None


def schema_problem(schema: dict[str, Any], payload: Any) -> str | None:
    error = next(iter(Draft202012Validator(schema).iter_errors(payload)), None)
    if error is None:
        return None
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"{error.message} (at payload{path})"


def _moment(value: Any, now: datetime) -> datetime | None:
    """When the asset was produced, in milliseconds: the precision `asset.produced` carries,
    so a stored production and its event compare equal."""
    if value is None:
        return to_ms(now)
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return to_ms(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _partition_note(key: str | None) -> str:
    return f" for partition {key!r}" if key else ""
