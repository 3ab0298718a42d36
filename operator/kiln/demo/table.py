"""``kubectl get <plural> -A`` as kubectl prints it, from a CRD's additionalPrinterColumns.

Each cell is the column's JSONPath evaluated on the object (jsonpath-ng, with the filter
expressions the CRDs use); a path that finds nothing leaves the cell blank, as kubectl does
with the API server's empty cells; ``date`` columns print as an age, as ``kubectl`` does
(``k8s.io/apimachinery/pkg/util/duration.HumanDuration``).
"""

from __future__ import annotations

import datetime
from typing import Any

from jsonpath_ng.ext import parse

__all__ = ["human_duration", "printer_table"]


def human_duration(seconds: float) -> str:
    """kubectl's AGE: 90s, 5m30s, 42m, 5h10m, 3d..."""
    seconds = int(seconds)
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _cell(obj: dict[str, Any], column: dict[str, Any], now: datetime.datetime) -> str:
    found = [m.value for m in parse("$" + column["jsonPath"]).find(obj)]
    if not found or found[0] is None:
        return ""
    value = found[0]
    if column["type"] == "date":
        created = datetime.datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
        return human_duration((now - created).total_seconds())
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def printer_table(crd: dict[str, Any], objects: list[dict[str, Any]], now: datetime.datetime,
                  all_namespaces: bool = True) -> str:
    """The table ``kubectl get`` prints for ``objects`` of ``crd``'s kind at ``now``."""
    columns = [c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]
               if not c.get("priority")]
    header = (["NAMESPACE"] if all_namespaces else []) + ["NAME"] + [c["name"].upper() for c in columns]
    rows = [header]
    for obj in objects:
        meta = obj["metadata"]
        rows.append(([meta.get("namespace", "")] if all_namespaces else []) + [meta["name"]]
                    + [_cell(obj, c, now) for c in columns])
    # kubectl's tabwriter: three spaces between columns, the last one unpadded.
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
