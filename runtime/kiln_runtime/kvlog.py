"""The KV-cache capacity TensorRT-LLM really allocated, read from its startup log.

Current format (kvCacheManager.cpp)::

    [TensorRT-LLM][INFO] [MemUsageChange] Allocated 61.84 GiB for max tokens in paged KV cache (405248).

Older formats (<= 0.2x) print blocks and tokens per block instead::

    [TensorRT-LLM][INFO] Number of blocks in KV cache primary pool: 3166
    [TensorRT-LLM][INFO] Number of tokens per block: 64.

and pre-0.9 runtimes ``Allocate 1234 bytes for k/v cache.`` / ``Using 4096 tokens in paged KV cache.``
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["KVCapacity", "KVLogParser", "parse_kv_log"]

_CURRENT = re.compile(r"Allocated ([0-9.]+) GiB for max tokens in paged KV cache \((\d+)\)")
_BLOCKS = re.compile(r"Number of blocks in KV cache primary pool: (\d+)")
_TOKENS_PER_BLOCK = re.compile(r"Number of tokens per block: (\d+)")
_OLD_BYTES = re.compile(r"Allocate (\d+) bytes for k/v cache")
_OLD_TOKENS = re.compile(r"Using (\d+) tokens in paged KV cache")


@dataclass(frozen=True)
class KVCapacity:
    tokens: int
    gib: float | None  # None when the log gives no size

    def wire(self) -> dict[str, object]:
        return {"tokens": self.tokens, "gib": self.gib}


class KVLogParser:
    """Feed log lines one at a time (as the server prints them); ``result`` once known."""

    def __init__(self, tokens_per_block: int | None = None) -> None:
        """``tokens_per_block`` (from the engine's config) covers old logs that omit it."""
        self.result: KVCapacity | None = None
        self._blocks: int | None = None
        self._tokens_per_block = tokens_per_block
        self._old_bytes: int | None = None

    def feed(self, line: str) -> KVCapacity | None:
        if self.result is not None:
            return None
        try:
            return self._feed(line)
        except ValueError:  # "1.2.3", or past int()'s 4300 digits: not the engine's line
            return None

    def _feed(self, line: str) -> KVCapacity | None:
        # The server's output carries text others chose before the engine's own line (a
        # tokenizer's warnings, a model's remote code): a look-alike is not a reason to stop
        # reading it, which would end the serving container.
        if match := _CURRENT.search(line):
            self.result = KVCapacity(int(match.group(2)), float(match.group(1)))
            return self.result
        # The current format also prints blocks per window, then the "Allocated" line: only
        # the old "primary pool" line completes a result from blocks.
        if match := _BLOCKS.search(line):
            self._blocks = int(match.group(1))
        elif match := _TOKENS_PER_BLOCK.search(line):
            self._tokens_per_block = int(match.group(1))
        elif match := _OLD_BYTES.search(line):
            self._old_bytes = int(match.group(1))
        elif match := _OLD_TOKENS.search(line):
            gib = self._old_bytes / 2**30 if self._old_bytes else None
            self.result = KVCapacity(int(match.group(1)), round(gib, 2) if gib else None)
            return self.result
        if self._blocks is not None and self._tokens_per_block is not None:
            self.result = KVCapacity(self._blocks * self._tokens_per_block, None)
            return self.result
        return None


def parse_kv_log(text: str, tokens_per_block: int | None = None) -> KVCapacity | None:
    parser = KVLogParser(tokens_per_block)
    for line in text.splitlines():
        parser.feed(line)
    return parser.result
