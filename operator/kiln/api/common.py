"""Shared pieces of the Kiln API: group/version, the base model, enums."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel

__all__ = [
    "GROUP",
    "VERSION",
    "API_VERSION",
    "KilnModel",
    "Percent",
    "Precision",
    "KVCacheDtype",
    "ServerKind",
    "AutoscalingMode",
    "ConditionType",
    "Reason",
]

GROUP = "serving.kiln.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def _from_percent(value: Any) -> Any:
    """``"35%"``, as the object stores it, is 0.35; a number is taken as the fraction."""
    if isinstance(value, str):
        if not value.endswith("%"):
            raise ValueError(f"{value!r} is not a percentage such as '35%'")
        return float(value[:-1]) / 100
    return value


# A fraction (0.35) in Python, a whole percentage ("35%") in the Kubernetes object, so that a
# string printer column shows it as such: additionalPrinterColumns print a number as it is.
Percent = Annotated[float, BeforeValidator(_from_percent),
                    PlainSerializer(lambda fraction: f"{fraction:.0%}", return_type=str),
                    WithJsonSchema({"type": "string"})]


class KilnModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        protected_namespaces=(),
        use_enum_values=True,
        validate_default=True,
    )

    def wire(self) -> dict:  # type: ignore[type-arg]
        """The camelCase dict as it is stored in the Kubernetes object."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Precision(StrEnum):
    """Weight precision of the engine."""

    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"
    INT8_SQ = "int8-sq"
    INT4_AWQ = "int4-awq"
    W4A8_AWQ = "w4a8-awq"
    INT8_WO = "int8-wo"
    INT4_WO = "int4-wo"
    NVFP4 = "nvfp4"


class KVCacheDtype(StrEnum):
    """Element type of the paged KV cache; ``auto`` follows the precision."""

    AUTO = "auto"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"
    INT8 = "int8"


class ServerKind(StrEnum):
    TRITON = "triton"
    DJL = "djl"


class AutoscalingMode(StrEnum):
    NONE = "none"
    BUILTIN = "builtin"
    KEDA = "keda"
    HPA = "hpa"
    KEDA_HTTP = "keda-http"


class ConditionType(StrEnum):
    READY = "Ready"
    ENGINE_READY = "EngineReady"
    FITS = "Fits"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    SCALING_ACTIVE = "ScalingActive"
    # spec.gateway only: whether the Gateway routes the model to the pool through a picker.
    GATEWAY_READY = "GatewayReady"


class Reason(StrEnum):
    """Every condition reason Kiln writes, PascalCase, in one place."""

    SPEC_INVALID = "SpecInvalid"
    FITS = "Fits"
    DOES_NOT_FIT = "DoesNotFit"
    NOT_BUILDABLE = "NotBuildable"
    MODEL_CONFIG_UNKNOWN = "ModelConfigUnknown"
    ENGINE_BUILDING = "EngineBuilding"
    ENGINE_BUILT = "EngineBuilt"
    ENGINE_BUILD_FAILED = "EngineBuildFailed"
    # An LLMEngine's: its build Job was deleted before it finished (no service wanted it).
    ENGINE_BUILD_CANCELLED = "EngineBuildCancelled"
    ROLLING_OUT = "RollingOut"
    # Rolling out, and a serving pod is one the scheduler cannot place.
    UNSCHEDULABLE = "Unschedulable"
    # Rolling out, and the namespace refuses a serving pod (a quota, a LimitRange, a policy).
    PODS_REFUSED = "PodsRefused"
    # Rolling out, and a serving container exits and is restarted (its last words said).
    SERVER_FAILING = "ServerFailing"
    REPLICAS_READY = "ReplicasReady"
    SCALED_TO_ZERO = "ScaledToZero"
    MISSING_DEPENDENCY = "MissingDependency"
    RESOURCE_CONFLICT = "ResourceConflict"
    # spec.gateway: another service claimed the served model name on that Gateway first.
    MODEL_NAME_IN_USE = "ModelNameInUse"
    # GatewayReady: routed; no Gateway has reported on the route yet; the Gateway refused the
    # route, or could not resolve its InferencePool; the pool's endpoint picker has no
    # available replica (the pool fails closed).
    GATEWAY_ROUTED = "GatewayRouted"
    ROUTE_PENDING = "RoutePending"
    ROUTE_NOT_ACCEPTED = "RouteNotAccepted"
    ROUTE_REFS_UNRESOLVED = "RouteRefsUnresolved"
    PICKER_UNAVAILABLE = "PickerUnavailable"
    CREDENTIALS_REQUIRED = "CredentialsRequired"
    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"
    METRICS_AVAILABLE = "MetricsAvailable"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    APPLY_REFUSED = "ApplyRefused"
    # The API server refused the operator a verb (HTTP 403): its RBAC lacks a rule.
    FORBIDDEN = "Forbidden"
