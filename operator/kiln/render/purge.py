"""The Job that removes one unreferenced engine's entry from a PVC cache (opt-in:
``kiln run --delete-unreferenced-engine-files``, chart ``engineCache.deleteUnreferencedFiles``).

Everything it names comes from the engine's key (64 hex digits) and the cache the sweep is in;
nothing from the LLMEngine's status (``storageUri`` is never read). ``kiln-runtime
delete-entry`` resolves ``<cache>/<key>`` and refuses anything but a directory directly under
the cache root, so the Job can remove that entry and nothing else.

The Job has no owner: the LLMEngine it would belong to is deleted right after it is created,
and the garbage collector would take the Job (and its pod, mid-way) with it. It goes
``PURGE_TTL_SECONDS`` after it finishes.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import SpecInvalid
from ..toolchain import RUNTIME_IMAGE
from .checks import check_objects
from .meta import LABEL_ENGINE, child_name, labels, stamp
from .pod import CACHE_MOUNT, restricted_container_security, restricted_pod_security, tmp_volume

__all__ = ["purge_job", "PURGE_COMPONENT"]

PURGE_COMPONENT = "engine-cache-purge"
PURGE_BACKOFF_LIMIT = 2
PURGE_TTL_SECONDS = 24 * 3600
PURGE_DEADLINE_SECONDS = 3600
_KEY = re.compile(r"[0-9a-f]{64}")
_CLAIM = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def purge_job(engine: str, key: str, namespace: str, claim: str) -> dict[str, Any]:
    """A Job in ``namespace`` that removes the entry ``key`` from the cache on PVC ``claim``;
    SpecInvalid naming the engine if the key or the claim is not one Kiln would write."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise SpecInvalid(f"spec.key: LLMEngine {str(engine)[:80]} has no engine key "
                          "(64 lowercase hex digits); its cache entry is left alone")
    if not isinstance(claim, str) or len(claim) > 253 or not _CLAIM.fullmatch(claim):
        raise SpecInvalid(f"spec.cache.claimName: LLMEngine {str(engine)[:80]} names no "
                          "PersistentVolumeClaim; its cache entry is left alone")
    job_labels = {**labels(engine, PURGE_COMPONENT), LABEL_ENGINE: engine}
    container = {
        "name": "delete-entry", "image": RUNTIME_IMAGE, "imagePullPolicy": "IfNotPresent",
        "command": ["kiln-runtime", "delete-entry", "--cache-root", CACHE_MOUNT, "--key", key],
        "volumeMounts": [{"name": "engine-cache", "mountPath": CACHE_MOUNT},
                         {"name": "tmp", "mountPath": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"memory": "256Mi"}},
        "securityContext": restricted_container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    job = stamp({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": child_name(engine, "purge"), "namespace": namespace, "labels": job_labels},
        "spec": {
            "backoffLimit": PURGE_BACKOFF_LIMIT,
            "ttlSecondsAfterFinished": PURGE_TTL_SECONDS,
            "activeDeadlineSeconds": PURGE_DEADLINE_SECONDS,
            "template": {"metadata": {"labels": dict(job_labels)}, "spec": {
                "restartPolicy": "Never",
                "securityContext": restricted_pod_security(),
                "automountServiceAccountToken": False,
                "containers": [container],
                "volumes": [{"name": "engine-cache", "persistentVolumeClaim": {"claimName": claim}},
                            tmp_volume()],
            }},
        },
    })
    check_objects([job])
    return job
