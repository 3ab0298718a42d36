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

__all__ = ["Request", "load_trace", "lead_in", "MAX_TRACE_BYTES", "MAX_TRACE_SPAN_DAYS", "MAX_TRACE_REQUESTS"]


@dataclass(frozen=True)
class Request:
    arrival: float  # seconds since the trace's first request
    input_tokens: int
    output_tokens: int


def _azure_time(text: str) -> float:
    whole, _, fraction = text.partition(".")
    stamp = datetime.datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.UTC)
    return stamp.timestamp() + float(f"0.{fraction or 0}")


# What one replay may hold: a trace file's size, the span it replays (after --time-scale) and
# its requests (after --rate-scale). The public traces are a few MB, an hour, and 10-30
# thousand requests; a week of a busy service's arrivals fits within all three. Each bound
# keeps a replay's memory and time (every policy decides every 15 s of the span) finite.
MAX_TRACE_BYTES = 256 * 1024 * 1024
MAX_TRACE_SPAN_DAYS = 7
MAX_TRACE_REQUESTS = 5_000_000


def _number(value: object, what: str, integer: bool) -> float:
    """A finite number from a trace's field (a CSV string or a JSON number); ValueError saying
    what it is otherwise."""
    if isinstance(value, bool) or value is None or (not isinstance(value, (int, float, str))):
        raise ValueError(f"{what} is {'missing' if value is None else type(value).__name__}")
    shown = str(value)[:30]
    try:
        number = float(value)  # a JSON integer of 400 digits overflows here
    except (ValueError, OverflowError):
        raise ValueError(f"{what} {shown!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} {shown!r} is not finite")
    if integer and (number < 0 or number != int(number)):
        raise ValueError(f"{what} {shown!r} is not a whole number of at least 0")
    return number


def _rows(path: Path, text: str) -> list[tuple[float, int, int]]:
    """(seconds, input tokens, output tokens) of each request; SpecInvalid naming the line."""
    rows: list[tuple[float, int, int]] = []
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON {type(record).__name__}, not an object")
                rows.append((_number(record.get("timestamp"), "timestamp", False) / 1000.0,
                             int(_number(record.get("input_length"), "input_length", True)),
                             int(_number(record.get("output_length"), "output_length", True))))
            except (ValueError, RecursionError) as error:
                raise SpecInvalid(f"--trace: {path.name} line {number}: {' '.join(str(error).split())[:120]}") from None
        return rows
    reader = csv.DictReader(text.splitlines())
    fields = set(reader.fieldnames or [])
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= fields:
        columns, when = ("TIMESTAMP", "ContextTokens", "GeneratedTokens"), _azure_time
    elif {"timestamp_s", "input_tokens", "output_tokens"} <= fields:
        columns, when = ("timestamp_s", "input_tokens", "output_tokens"), None
    else:
        raise SpecInvalid(f"--trace: {path.name} has columns {sorted(fields)[:8]}; expected the Azure "
                          "LLM inference CSV, Mooncake JSONL, or timestamp_s,input_tokens,output_tokens")
    try:
        for record in reader:
            t, i, o = (record.get(c) for c in columns)
            if t is None:
                raise ValueError(f"{columns[0]} is missing")
            rows.append((when(t) if when else _number(t, columns[0], False),
                         int(_number(i, columns[1], True)), int(_number(o, columns[2], True))))
    except (ValueError, csv.Error) as error:
        raise SpecInvalid(f"--trace: {path.name} line {reader.line_num}: {' '.join(str(error).split())[:120]}") from None
    return rows


def load_trace(path: Path, rate_scale: float = 1.0, time_scale: float = 1.0) -> list[Request]:
    """Load and normalise a trace. ``rate_scale`` > 1 multiplies arrivals (each request is
    repeated, the copies spread evenly until the next request); ``time_scale`` > 1 stretches
    time. Bounded: :data:`MAX_TRACE_BYTES`, :data:`MAX_TRACE_SPAN_DAYS` and
    :data:`MAX_TRACE_REQUESTS`."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_TRACE_BYTES + 1)
    except OSError as error:
        raise SpecInvalid(f"--trace: cannot read {path}: {error.strerror}") from None
    if len(data) > MAX_TRACE_BYTES:
        raise SpecInvalid(f"--trace: {path.name} is more than the {MAX_TRACE_BYTES // 2**20} MiB a trace may have")
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's byte order mark is not the first column's
    except UnicodeDecodeError as error:
        raise SpecInvalid(f"--trace: {path.name} is not UTF-8 text (byte {error.start})") from None
    rows = _rows(path, text)
    if not rows:
        raise SpecInvalid(f"--trace: {path.name} has no requests")
    span = (max(r[0] for r in rows) - min(r[0] for r in rows)) * time_scale
    if not span <= MAX_TRACE_SPAN_DAYS * 86400:
        raise SpecInvalid(f"--trace: {path.name} spans {span / 86400:.3g} days (with --time-scale {time_scale:g}); "
                          f"a replay is at most {MAX_TRACE_SPAN_DAYS} days: cut the trace")
    if len(rows) * rate_scale > MAX_TRACE_REQUESTS:
        raise SpecInvalid(f"--rate-scale: {rate_scale:g} makes {len(rows) * rate_scale:.3g} requests of the "
                          f"{len(rows)} in {path.name}; a replay is at most {MAX_TRACE_REQUESTS:,}")
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
