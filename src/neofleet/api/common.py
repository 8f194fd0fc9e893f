"""Building blocks shared by both resources: camelCase fields, conditions, tolerations."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SHA256 = r"^[a-f0-9]{64}$"
QUANTITY = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        """The JSON to send: absent, not null, for unset fields, and no empty strings (the
        sandbox's 1.20 apiserver decodes "" in custom resources as null and refuses it)."""
        wired: dict[str, Any] = _drop_empty(self.model_dump(by_alias=True, exclude_none=True,
                                                            mode="json"))
        return wired


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


class Toleration(ApiModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)


class Resources(ApiModel):
    """Container resources: quantities by resource name (``cpu``, ``memory``,
    ``nvidia.com/gpu``)."""

    requests: dict[str, str] = Field(default_factory=dict,
                                     json_schema_extra={"additionalProperties":
                                                        {"type": "string", "pattern": QUANTITY}})
    limits: dict[str, str] = Field(default_factory=dict,
                                   json_schema_extra={"additionalProperties":
                                                      {"type": "string", "pattern": QUANTITY}})


class Condition(ApiModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str | None = None
