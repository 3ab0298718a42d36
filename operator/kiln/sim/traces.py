"""Request traces: Azure LLM inference CSV, Mooncake JSONL, or ``timestamp_s,input_tokens,output_tokens``."""

from __future__ import annotations

import csv
import datetime
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpecInvalid

__all__ = ["Request", "load_trace", "lead_in"]


@dataclass(frozen=True)
class Request:
    arrival: float  # seconds since the trace's first request
    input_tokens: int
    output_tokens: int


def _azure_time(text: str) -> float:
    whole, _, fraction = text.partition(".")
    stamp = datetime.datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.UTC)
    return stamp.timestamp() + float(f"0.{fraction or 0}")


def load_trace(path: Path, rate_scale: float = 1.0, time_scale: float = 1.0) -> list[Request]:
    """Load and normalise a trace. ``rate_scale`` > 1 multiplies arrivals (each request is
    repeated, the copies spread evenly until the next request); ``time_scale`` > 1 stretches
    time."""
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecInvalid(f"--trace: cannot read {path}: {error.strerror}") from None
    rows: list[tuple[float, int, int]] = []
    try:
        if path.suffix == ".jsonl":
            for line in text.splitlines():
                if line.strip():
                    record = json.loads(line)
                    rows.append((record["timestamp"] / 1000.0, int(record["input_length"]),
                                 int(record["output_length"])))
        else:
            reader = csv.DictReader(text.splitlines())
            fields = set(reader.fieldnames or [])
            if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= fields:
                rows = [(_azure_time(r["TIMESTAMP"]), int(r["ContextTokens"]), int(r["GeneratedTokens"]))
                        for r in reader]
            elif {"timestamp_s", "input_tokens", "output_tokens"} <= fields:
                rows = [(float(r["timestamp_s"]), int(r["input_tokens"]), int(r["output_tokens"]))
                        for r in reader]
            else:
                raise SpecInvalid(f"--trace: {path.name} has columns {sorted(fields)}; expected the Azure "
                                  "LLM inference CSV, Mooncake JSONL, or timestamp_s,input_tokens,output_tokens")
    except (KeyError, ValueError, json.JSONDecodeError) as error:
        raise SpecInvalid(f"--trace: {path.name}: malformed row ({error})") from None
    if not rows:
        raise SpecInvalid(f"--trace: {path.name} has no requests")
    rows.sort()
    start = rows[0][0]
    requests = []
    copies = max(1, int(rate_scale))
    extra = rate_scale - copies
    for index, (t, i, o) in enumerate(rows):
        base = (t - start) * time_scale
        # Copies spread over the gap to the next request, so a scaled trace keeps its shape
        # instead of arriving in lock-step clumps.
        gap = min(60.0, ((rows[index + 1][0] - start) * time_scale - base)) if index + 1 < len(rows) else 1.0
        if rate_scale < 1:  # thinned evenly: the requests at which the running count crosses a whole one
            n = math.floor((index + 1) * rate_scale) - math.floor(index * rate_scale)
        else:
            n = copies + (1 if extra and (index * extra) % 1 + extra >= 1 else 0)
        for k in range(n):
            requests.append(Request(base + gap * k / n, max(1, i), max(1, o)))
    if not requests:
        raise SpecInvalid(f"--rate-scale: {rate_scale:g} keeps none of the {len(rows)} requests of {path.name}")
    requests.sort(key=lambda r: r.arrival)
    return requests


def lead_in(requests: Sequence[Request], seconds: float) -> list[Request]:
    """The trace's first ``seconds`` mirrored to just before it opens (a request at ``t``
    replayed at ``-t``, arrivals in (-seconds, 0)): replayed first, they put a reactive policy
    in the state it would be in on a service that had been serving this load, instead of a
    fleet sized for whatever the first minute holds. Mirrored, not the trace's end moved
    before it: the rate is then continuous where the counted trace opens, so no policy meets
    a step the splice made (a diurnal trace's end can run at under half its opening rate)."""
    if not requests or seconds <= 0:
        return []
    return [Request(-r.arrival, r.input_tokens, r.output_tokens)
            for r in reversed(requests) if 0 < r.arrival < seconds]
