"""Reading YAML manifests that anyone may have written: bounded, and errors on one line.

``kiln render``, ``kiln plan``, ``kiln simulate``, ``kiln demo`` and the Argo CD plugin (which
runs ``kiln render``) read manifests through :func:`load_yaml`. PyYAML's safe loader already
refuses arbitrary objects; what it does not bound is the work: an alias tree (a "billion
laughs") expands exponentially, nesting is composed recursively, and an integer of thousands of
digits costs quadratic time to convert. This loader bounds all three while composing, before
anything is constructed:

- the text: at most ``MAX_BYTES``;
- nesting: at most ``MAX_DEPTH`` levels;
- the composed tree with every alias expanded: at most ``MAX_NODES`` nodes;
- a number: at most ``MAX_NUMBER_CHARS`` characters.

Every error is one line, ``file:line:column: field: what`` (line and column from 1), quoting at
most a short prefix of any value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import SpecInvalid

__all__ = ["load_yaml", "read_yaml_file", "read_bounded", "MAX_BYTES", "MAX_DEPTH", "MAX_NODES",
           "MAX_NUMBER_CHARS"]

MAX_BYTES = 1024 * 1024       # an LLMService is a few hundred bytes; a folder's file a few KB
MAX_DEPTH = 64                # the deepest LLMService field is 4 levels down
MAX_NODES = 100_000           # after alias expansion
MAX_NUMBER_CHARS = 64         # more digits than any field's bound needs, and than a float has

_NUMBER_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


def _at(source: str, node_or_mark: Any) -> str:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    if mark is None:
        return source
    return f"{source}:{mark.line + 1}:{mark.column + 1}"


def _short(text: str, limit: int = 40) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")


class _BoundedLoader(yaml.SafeLoader):  # type: ignore[misc, unused-ignore]
    """SafeLoader that keeps the field path while composing and refuses past the bounds."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.path: list[str] = []
        self.sizes: dict[int, int] = {}  # expanded size of each composed node, by id

    def _refuse(self, where: Any, what: str) -> SpecInvalid:
        parts = [part for part in self.path if part]
        field = ".".join(parts[:8]).replace(".[", "[") + ("..." if len(parts) > 8 else "")
        return SpecInvalid(f"{_at(self.source, where)}: {field or 'document'}: {what}")

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # The scanner runs ahead of the composer and keeps one possible simple key per open
        # flow level, checking all of them on every token: thousands of "[" cost seconds
        # before the composer's depth check is reached. Stop them here.
        if self.flow_level >= MAX_DEPTH:
            raise self._refuse(self.get_mark(), f"nested more than {MAX_DEPTH} levels deep")
        super().fetch_flow_collection_start(token_class)  # type: ignore[misc, unused-ignore]

    def compose_document(self) -> Node | None:
        self.path, self.sizes = [], {}
        return super().compose_document()  # type: ignore[no-any-return, unused-ignore]

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if isinstance(index, ScalarNode):
            self.path.append(_short(str(index.value), 40).strip("'\""))
        elif isinstance(index, int):
            self.path.append(f"[{index}]")
        else:
            self.path.append("<key>" if isinstance(parent, MappingNode) else "")
        if len(self.path) > MAX_DEPTH + 1:
            raise self._refuse(self.peek_event().start_mark,
                               f"nested more than {MAX_DEPTH} levels deep")
        node = super().compose_node(parent, index)
        if node is not None:
            self._count(node)
        self.path.pop()
        return node  # type: ignore[no-any-return, unused-ignore]

    def _unique_keys(self, node: MappingNode) -> None:
        """A key given twice: the API server refuses it (a strict decoder's "duplicate field"),
        where a YAML loader keeps the last one without a word."""
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in seen:
                    raise self._refuse(key, f"duplicate key {_short(key.value, 40)}")
                seen.add(key.value)

    def _count(self, node: Node) -> None:
        if id(node) in self.sizes:  # an alias: its subtree counts again where it is used
            size = self.sizes[id(node)]
        elif isinstance(node, ScalarNode):
            size = 1
            if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
                raise self._refuse(node, f"a number of {len(node.value)} characters "
                                         f"({_short(node.value, 20)}); at most {MAX_NUMBER_CHARS}")
            self.sizes[id(node)] = size
        else:
            if isinstance(node, MappingNode):
                self._unique_keys(node)
            children = node.value if isinstance(node, SequenceNode) else \
                [part for pair in node.value for part in pair]
            size = 1 + sum(self.sizes.get(id(child), 1) for child in children)
            self.sizes[id(node)] = size
        if size > MAX_NODES:
            raise self._refuse(node, f"more than {MAX_NODES} values once its aliases are "
                                     "expanded (an alias bomb?)")


def load_yaml(text: str | bytes, source: str) -> list[Any]:
    """Every non-empty document in ``text``; SpecInvalid with one ``source:line:column`` line."""
    if len(text) > MAX_BYTES:
        raise SpecInvalid(f"{source}: {len(text)} bytes, more than the {MAX_BYTES} a manifest may have")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise SpecInvalid(f"{source}: not UTF-8 text (byte {error.start})") from None
    loader = _BoundedLoader(text, source)
    documents: list[Any] = []
    try:
        while loader.check_data():
            document = loader.get_data()
            if document is not None:
                documents.append(document)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        what = " ".join(str(part) for part in (error.context, error.problem) if part)
        raise SpecInvalid(f"{_at(source, mark)}: not valid YAML: {' '.join(what.split())[:200]}") from None
    except yaml.YAMLError as error:  # a reader error (a control character), no mark
        raise SpecInvalid(f"{source}: not valid YAML: {' '.join(str(error).split())[:200]}") from None
    finally:
        loader.dispose()
    return documents


def read_bounded(stream: BinaryIO, source: str, limit: int = MAX_BYTES, what: str = "a manifest") -> bytes:
    """At most ``limit`` bytes of ``stream``; SpecInvalid past them, having read one more at
    most (a device, a pipe or a FIFO reports no size to refuse it by)."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise SpecInvalid(f"{source}: more than the {limit} bytes {what} may have")
    return data


def read_yaml_file(path: Path) -> list[Any]:
    """:func:`load_yaml` of a file, refusing it by its size before reading it whole."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SpecInvalid(f"{path}: {size} bytes, more than the {MAX_BYTES} a manifest may have")
        with path.open("rb") as stream:
            text = read_bounded(stream, str(path))
    except OSError as error:
        raise SpecInvalid(f"{path}: {error.strerror}") from None
    return load_yaml(text, str(path))
