"""An in-memory S3 bucket behind the boto3 client calls Kiln makes (list_objects_v2 pages,
get_object, download_file, delete_objects), with S3's semantics: keys are opaque strings, so
``..`` in a key is just characters to S3."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

__all__ = ["MemoryBucket"]


class MemoryBucket:
    """``page`` keys a page (S3 caps a page at 1,000); a ``lying`` bucket lists one key outside
    the prefix asked; ``pages`` counts the pages served."""

    def __init__(self, name: str, objects: dict[str, bytes], page: int = 1000, lying: str = "") -> None:
        self.name, self.objects, self.page, self.lying = name, objects, page, lying
        self.pages = 0

    def get_paginator(self, operation: str) -> Any:
        assert operation == "list_objects_v2"
        bucket = self

        class _Pages:
            def paginate(self, Bucket: str, Prefix: str):  # noqa: N803 (boto3's names)
                assert Bucket == bucket.name
                keys = [k for k in sorted(bucket.objects) if k.startswith(Prefix)]
                if bucket.lying:
                    keys.append(bucket.lying)
                for start in range(0, len(keys), bucket.page):
                    bucket.pages += 1
                    yield {"Contents": [{"Key": k, "Size": len(bucket.objects.get(k, b""))}
                                        for k in keys[start:start + bucket.page]]}

        return _Pages()

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        assert Bucket == self.name
        return {"Body": io.BytesIO(self.objects[Key])}

    def download_file(self, bucket: str, key: str, filename: str) -> None:
        assert bucket == self.name
        Path(filename).write_bytes(self.objects[key])

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        assert Bucket == self.name
        for obj in Delete["Objects"]:
            self.objects.pop(obj["Key"])
        return {}
