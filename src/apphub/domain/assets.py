"""Asset declarations: what a step says it produces or consumes, and how assets are partitioned."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, StringConstraints, field_validator

from apphub.domain.base import ApiModel, JsonObject
from apphub.domain.schemas import check_json_schema

AssetId = Annotated[
    str,
    StringConstraints(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._:-]*$", min_length=1, max_length=200),
]
PositiveMs = Annotated[int, Field(ge=1, le=31_536_000_000)]
PartitionKey = Annotated[str, StringConstraints(min_length=1, max_length=200)]


def asset_key(asset_id: str) -> str:
    """Asset ids compare case-insensitively; this is the form they are compared and indexed in."""
    return asset_id.lower()


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}") from None
    return name


class Freshness(ApiModel):
    max_age_ms: PositiveMs | None = None
    ttl_ms: PositiveMs | None = None
    cadence_ms: PositiveMs | None = None


class AutoMaterialize(ApiModel):
    on_upstream_update: bool = False
    priority: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)
    parameter_defaults: JsonObject | None = None
    enabled: bool = True


class StaticPartitioning(ApiModel):
    type: Literal["static"]
    keys: list[PartitionKey] = Field(min_length=1, max_length=500)

    @field_validator("keys")
    @classmethod
    def _unique_keys(cls, keys: list[str]) -> list[str]:
        if len(set(keys)) != len(keys):
            raise ValueError("partition keys must be unique")
        return keys


class TimeWindowPartitioning(ApiModel):
    type: Literal["timeWindow"]
    granularity: Literal["minute", "hour", "day", "week", "month"]
    timezone: str = "UTC"
    format: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    lookback_windows: int | None = Field(default=None, ge=1, le=10_000)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        return check_timezone(name)


class DynamicPartitioning(ApiModel):
    type: Literal["dynamic"]
    max_keys: int | None = Field(default=None, ge=1, le=1_000_000)
    retention_days: int | None = Field(default=None, ge=1, le=36_500)


Partitioning = Annotated[
    StaticPartitioning | TimeWindowPartitioning | DynamicPartitioning,
    Field(discriminator="type"),
]
PARTITIONING_TAGS = frozenset({"static", "timeWindow", "dynamic"})


class AssetDeclaration(ApiModel):
    asset_id: AssetId
    asset_schema: JsonObject | None = Field(default=None, alias="schema")
    freshness: Freshness | None = None
    auto_materialize: AutoMaterialize | None = None
    partitioning: Partitioning | None = None

    @field_validator("asset_schema")
    @classmethod
    def _valid_schema(cls, schema: JsonObject | None) -> JsonObject | None:
        return check_json_schema(schema)


def unique_assets(declarations: list[AssetDeclaration]) -> list[AssetDeclaration]:
    """A step names each asset once per direction (compared case-insensitively)."""
    seen: set[str] = set()
    for declaration in declarations:
        key = asset_key(declaration.asset_id)
        if key in seen:
            raise ValueError(f"asset {declaration.asset_id!r} is declared more than once")
        seen.add(key)
    return declarations


Direction = Literal["produces", "consumes"]


def declaration_record(
    step_id: str, direction: Direction, declaration: AssetDeclaration
) -> dict[str, Any]:
    """The row-shaped view of one declaration, as `workflow_asset_declarations` keeps it."""
    dumped = declaration.model_dump(mode="json", by_alias=True)
    return {
        "step_id": step_id,
        "direction": direction,
        "asset_id": declaration.asset_id,
        "asset_key": asset_key(declaration.asset_id),
        "asset_schema": dumped["schema"],
        "freshness": dumped["freshness"],
        "auto_materialize": dumped["autoMaterialize"],
        "partitioning": dumped["partitioning"],
    }
