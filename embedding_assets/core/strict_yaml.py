"""YAML as data only: no anchors or aliases (the "billion laughs" bomb), no merge keys, no tags
beyond the plain scalars, and a size cap. For contracts and Markdown front matter, which are
short documents written by hand: none of these features is needed there."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

MAX_YAML_BYTES = 256 * 1024
_PLAIN_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}


class StrictYAMLError(ValueError):
    """A document the strict loader refuses, with the line it refuses it at."""


class _StrictLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConstructorError(None, None, "anchors and aliases (&, *) are not allowed", event.start_mark)
        node: Any = super().compose_node(parent, index)
        if node.tag not in _PLAIN_TAGS and node.tag != "tag:yaml.org,2002:merge":
            raise ConstructorError(None, None, f"the tag {node.tag!r} is not allowed", node.start_mark)
        return node

    def flatten_mapping(self, node: Any) -> None:
        for key, _ in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                raise ConstructorError(None, None, "merge keys (<<) are not allowed", key.start_mark)
        super().flatten_mapping(node)


def load_strict(text: str | bytes, what: str = "the document") -> Any:
    """The parsed document; :class:`StrictYAMLError` (one line) for anything refused."""
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > MAX_YAML_BYTES:
        raise StrictYAMLError(f"{what} is {size:,} bytes; the limit is {MAX_YAML_BYTES:,}")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - the loader is the strict one above
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StrictYAMLError(f"{problem}{where}") from None
