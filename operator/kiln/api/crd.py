"""Generate the CustomResourceDefinitions from the pydantic models.

The pydantic JSON Schema is turned into a structural OpenAPI v3 schema: ``$ref`` inlined,
``Optional`` unwrapped, ``int | "auto"`` mapped to ``x-kubernetes-int-or-string``, and the
cross-field rules attached as CEL ``x-kubernetes-validations`` (the same rules the pydantic
validators enforce, so the API server and ``kiln render`` agree).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from .common import GROUP, VERSION
from .llmengine import LLMEngineSpec, LLMEngineStatus
from .limits import MAX_WINDOW_SECONDS, MAX_WORKER_PODS, SERVICE_NAME_PATTERN
from .llmservice import CALIBRATED_PRECISIONS, LLMServiceSpec, LLMServiceStatus

__all__ = ["crds", "openapi_schema"]

_DROP_KEYS = {"title", "additionalProperties"}

# CEL rules, keyed by the dotted path of the object they sit on ("" = spec itself).
_SERVICE_RULES: dict[str, list[dict[str, str]]] = {
    "": [
        {
            "rule": "!(type(self.parallelism.tensor) == int && type(self.parallelism.pipeline) == int)"
                    " || self.parallelism.tensor * self.parallelism.pipeline == self.gpus",
            "message": "parallelism: tensor x pipeline must equal gpus",
            "fieldPath": ".parallelism",
        },
        {
            "rule": "type(self.parallelism.tensor) != int || self.gpus % self.parallelism.tensor == 0",
            "message": "parallelism.tensor must divide gpus",
            "fieldPath": ".parallelism.tensor",
        },
        {
            "rule": "type(self.parallelism.pipeline) != int"
                    " || self.gpus % self.parallelism.pipeline == 0",
            "message": "parallelism.pipeline must divide gpus",
            "fieldPath": ".parallelism.pipeline",
        },
        {
            "rule": "self.gpus <= self.gpu.perNode || self.gpus % self.gpu.perNode == 0",
            "message": "gpus spans nodes, so it must be a multiple of gpu.perNode",
            "fieldPath": ".gpus",
        },
        {
            # Every worker pod is named in the launcher Role, which must fit in one object.
            "rule": "self.gpus <= self.gpu.perNode || (self.replicas > self.autoscaling.maxReplicas"
                    " ? self.replicas : self.autoscaling.maxReplicas)"
                    f" * (self.gpus / self.gpu.perNode - 1) <= {MAX_WORKER_PODS}",
            "message": f"a multi-node service may run at most {MAX_WORKER_PODS} worker pods: "
                       "max(replicas, autoscaling.maxReplicas) x (gpus / gpu.perNode - 1)",
            "fieldPath": ".replicas",
        },
        {
            "rule": "!has(self.model.calibration) || self.precision in "
                    f"{list(CALIBRATED_PRECISIONS)}",
            "message": "model.calibration applies to the precisions quantize.py calibrates: "
                       + ", ".join(CALIBRATED_PRECISIONS),
            "fieldPath": ".model.calibration",
        },
        {
            "rule": "!has(self.model.calibration) || !(self.model.calibration.source == 'pvc://' + "
                    "self.engineCache.claimName || self.model.calibration.source.startsWith('pvc://' + "
                    "self.engineCache.claimName + '/'))",
            "message": "model.calibration must not name the engine cache's claim",
            "fieldPath": ".model.calibration",
        },
        {
            "rule": "!(has(self.model.calibration) && has(self.runtime) && has(self.runtime.server)"
                    " && self.runtime.server == 'djl')",
            "message": "model.calibration needs runtime.server: triton",
            "fieldPath": ".model.calibration",
        },
        {
            "rule": "!(has(self.gateway) && has(self.runtime) && has(self.runtime.server)"
                    " && self.runtime.server == 'djl')",
            "message": "gateway needs runtime.server: triton (the OpenAI-compatible frontend)",
            "fieldPath": ".gateway",
        },
    ],
    "gpu": [
        {"rule": "!self.resourceName.contains('kubernetes.io/')"
                 " && !self.resourceName.startsWith('requests.')",
         "message": "gpu.resourceName must not be in the reserved kubernetes.io/ namespace nor "
                    "start with requests.",
         "fieldPath": ".resourceName"},
        {"rule": "self.resourceName.matches('^[^/]{1,244}/[^/]{1,63}$')",
         "message": "gpu.resourceName must have a domain of at most 244 characters and a name of "
                    "at most 63",
         "fieldPath": ".resourceName"},
    ],
    "model.calibration": [
        {"rule": "!self.source.matches('(^|/)[.][.]?(/|$)')",
         "message": "model.calibration.source must not contain '.' or '..' path segments",
         "fieldPath": ".source"},
    ],
    "model": [
        {"rule": "self.source == oldSelf.source", "message": "model.source is immutable",
         "fieldPath": ".source"},
        # The source pattern admits any segment; the operator refuses '.' and '..' (a pvc://
        # path must not climb out of its claim), so the API server must too.
        {"rule": "!self.source.matches('(^|/)[.][.]?(/|$)')",
         "message": "model.source must not contain '.' or '..' path segments", "fieldPath": ".source"},
    ],
    "parallelism": [
        {"rule": f"type(self.{axis}) == string ? self.{axis} == 'auto' : self.{axis} >= 1",
         "message": f"parallelism.{axis} must be a positive integer or auto",
         "fieldPath": f".{axis}"}
        for axis in ("tensor", "pipeline")
    ],
    "autoscaling": [
        {"rule": "self.minReplicas <= self.maxReplicas",
         "message": "minReplicas must not exceed maxReplicas", "fieldPath": ".minReplicas"},
        {"rule": f"!(self.mode in ['keda', 'hpa']) || self.scaleDownStabilizationSeconds <= {MAX_WINDOW_SECONDS}",
         "message": f"scaleDownStabilizationSeconds must be at most {MAX_WINDOW_SECONDS} with keda "
                    "and hpa (an HorizontalPodAutoscaler's limit)",
         "fieldPath": ".scaleDownStabilizationSeconds"},
        {"rule": "!has(self.mode) || self.mode in ['none', 'keda-http'] || self.minReplicas >= 1",
         "message": "minReplicas: 0 never wakes in modes builtin, keda and hpa (no pod, no "
                    "metric); use mode keda-http, which wakes on a request, or minReplicas >= 1",
         "fieldPath": ".minReplicas"},
    ],
    "engine": [
        {"rule": "!has(self.maxInputLen) || self.maxInputLen < self.maxSeqLen",
         "message": "maxInputLen must be smaller than maxSeqLen", "fieldPath": ".maxInputLen"},
    ],
}


# On the object itself: the name is the stem of every child's name, and a Service's name must
# be a DNS-1035 label (kubernetes pkg/apis/core/validation/validation.go, ValidateServiceName);
# so must the app.kubernetes.io/instance label value it becomes (at most 63 characters). Only
# metadata.name and metadata.generateName are visible to CEL at the root (apiextensions-apiserver
# pkg/apiserver/schema/cel/validation_test.go).
_SERVICE_ROOT_RULES = [
    {"rule": f"size(self.metadata.name) <= 63 && self.metadata.name.matches('{SERVICE_NAME_PATTERN}')",
     "message": "metadata.name must be a DNS-1035 label: at most 63 lowercase letters, digits and "
                "'-', starting with a letter (it names the service's Kubernetes Service)"},
]


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _structural({**target, **extra}, defs)
    node = {k: v for k, v in node.items() if k not in _DROP_KEYS and k != "$defs"}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        types = {o.get("type") for o in options}
        if types == {"integer", "string"}:
            node["x-kubernetes-int-or-string"] = True
            for option in options:
                if option.get("type") == "string" and "enum" in option:
                    node.setdefault("description", "")
                    node["description"] = (node["description"] + " (an integer or "
                                           + " | ".join(option["enum"]) + ")").strip()
        elif len(options) == 1:
            node = {**_structural(options[0], defs), **node}
        else:
            raise ValueError(f"cannot express anyOf {options} structurally")
    if node.get("default", 0) is None:
        del node["default"]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node[bound], bool):
            node[plain] = node.pop(bound)
            node[bound] = True
    if node.get("type") == "number":
        node.update(_fractional_bound_rules(node))
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    if node.get("type") == "object" and "properties" in node:
        node["properties"] = {k: _structural(v, defs) for k, v in node["properties"].items()}
        for prop in node["properties"].values():
            # A nested object whose fields all have defaults gets a default too, so that the API
            # server fills in its fields' defaults. Spelled out rather than {}: the API server
            # evaluates the object's CEL rules on the default as written (a {} default is refused
            # with "no such key"), and spelled out it is what defaulting {} would produce.
            if prop.get("type") == "object" and "default" not in prop and not prop.get("required"):
                prop["default"] = {k: v["default"] for k, v in (prop.get("properties") or {}).items()
                                   if "default" in v}
    if "items" in node:
        node["items"] = _structural(node["items"], defs)
    return node


def _fractional_bound_rules(node: dict[str, Any]) -> dict[str, Any]:
    """CEL rules that repeat a number's fractional bounds. The API server checks a value written
    as a JSON integer against ``int64(bound)`` (kube-openapi ``MinimumNativeType``), so ``0``
    passes ``minimum: 0.01``; CEL sees every ``number`` as a double and compares it exactly."""
    rules = list(node.get("x-kubernetes-validations", []))
    for bound, sign, words in (("minimum", ">", "greater than"), ("maximum", "<", "less than")):
        limit = node.get(bound)
        if isinstance(limit, float) and not limit.is_integer():
            exclusive = node.get("exclusive" + bound.capitalize()) is True
            rules.append({"rule": f"self {sign}{'' if exclusive else '='} {limit!r}",
                          "message": f"must be {words} {'' if exclusive else 'or equal to '}{limit!r}"})
    return {"x-kubernetes-validations": rules} if rules else {}


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    if model.__doc__:
        schema["description"] = " ".join(model.__doc__.split())
    return schema


def _attach_rules(schema: dict[str, Any], rules: dict[str, list[dict[str, str]]]) -> None:
    for path, rule_list in rules.items():
        node = schema
        for part in filter(None, path.split(".")):
            node = node["properties"][part]
        node["x-kubernetes-validations"] = [*node.get("x-kubernetes-validations", []), *rule_list]


def _status_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The status as Kiln types it, and nothing else: the API server prunes unknown fields.
    kopf would keep its handlers' progress in ``status.kopf`` by default (its
    SmartProgressStorage, whose touch field is ``status.kopf.dummy``: kopf/_cogs/configs/
    progress.py); the operator configures AnnotationsProgressStorage and
    AnnotationsDiffBaseStorage (controller/handlers.py, ``configure``), so kopf writes
    annotations only.

    Without defaults: the operator writes the status whole and compares it with what it read,
    and a default would be put back by the API server in every request and every read from
    etcd (apiextensions-apiserver, pkg/apiserver/schema/defaulting/algorithm.go, ``Default``).
    A field the operator removes (``endpoints`` of a service with no OpenAI endpoint, which
    the nested-object rule of ``_structural`` defaulted to ``{}``) came back, and removing it
    again was a write that changed nothing, repeated on every full resync."""
    return _without_defaults(openapi_schema(model))


def _without_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with no ``default`` at any level (of its properties and items)."""
    node = {key: value for key, value in schema.items() if key != "default"}
    if "properties" in node:
        node["properties"] = {name: _without_defaults(prop) for name, prop in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _without_defaults(node["items"])
    return node


def _crd(kind: str, plural: str, scope: str, spec: dict[str, Any], status: dict[str, Any],
         short_names: list[str], columns: list[dict[str, Any]],
         subresources: dict[str, Any], root_rules: list[dict[str, str]] | None = None) -> dict[str, Any]:
    root: dict[str, Any] = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }
    if root_rules:
        root["x-kubernetes-validations"] = root_rules
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower(), "shortNames": short_names,
                      "categories": ["kiln"]},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": subresources,
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }


def _condition_column(name: str, condition: str) -> dict[str, Any]:
    return {"name": name, "type": "string",
            "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status'}


def crds() -> list[dict[str, Any]]:
    """Both CRDs, in a stable order (LLMEngine, LLMService)."""
    service_spec = openapi_schema(LLMServiceSpec)
    _attach_rules(service_spec, _SERVICE_RULES)
    engine_spec = openapi_schema(LLMEngineSpec)
    engine_spec["x-kubernetes-validations"] = [
        {"rule": "self == oldSelf", "message": "an LLMEngine's spec is immutable"}]
    age = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    service = _crd(
        "LLMService", "llmservices", "Namespaced", service_spec, _status_schema(LLMServiceStatus),
        ["llms"],
        [
            _condition_column("Ready", "Ready"),
            {"name": "Reason", "type": "string",
             "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
            {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
            # Set only by the builtin autoscaler (blank otherwise): shown with -o wide.
            {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas", "priority": 1},
            {"name": "GPUs", "type": "integer", "jsonPath": ".spec.gpus"},
            {"name": "Precision", "type": "string", "jsonPath": ".spec.precision"},
            {"name": "TPxPP", "type": "string", "jsonPath": ".status.tpPp"},
            {"name": "KV-Util", "type": "string", "jsonPath": ".status.kvCacheUtilization",
             "priority": 0},
            # A URL is wide: like a pod's IP, it shows with -o wide, so the default fits 100 columns.
            {"name": "URL", "type": "string", "jsonPath": ".status.endpoints.openai", "priority": 1},
            age,
        ],
        {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                 "statusReplicasPath": ".status.replicas",
                                 "labelSelectorPath": ".status.selector"}},
        _SERVICE_ROOT_RULES,
    )
    engine = _crd(
        "LLMEngine", "llmengines", "Cluster", engine_spec, _status_schema(LLMEngineStatus),
        ["llme"],
        [
            _condition_column("Ready", "Ready"),
            {"name": "Model", "type": "string", "jsonPath": ".spec.modelSource"},
            {"name": "Precision", "type": "string", "jsonPath": ".spec.precision"},
            {"name": "TP", "type": "integer", "jsonPath": ".spec.tensorParallel"},
            {"name": "PP", "type": "integer", "jsonPath": ".spec.pipelineParallel"},
            {"name": "GPU", "type": "string", "jsonPath": ".spec.gpuType"},
            age,
        ],
        {"status": {}},
    )
    return [engine, service]
