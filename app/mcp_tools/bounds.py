"""Argument bounds every MCP tool shares, as annotated types (they show in the JSON schemas)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, Field

MAX_QUERY_CHARS = 2000
MAX_LIMIT = 50
MAX_OFFSET = 100_000
MAX_CONTENT_BYTES = 1_000_000
MAX_METADATA_BYTES = 16_384
MAX_METADATA_KEYS = 64
MAX_KEY_CHARS = 500  # source keys, document refs, paths' text
MAX_PATH_CHARS = 4096
MAX_SHORT_CHARS = 250  # session ids, components, dag/task ids
MAX_TEXT_CHARS = 20_000  # error messages, solutions, details


def _content_size(value: str) -> str:
    size = len(value.encode("utf-8"))
    if size > MAX_CONTENT_BYTES:
        raise ValueError(
            f"content is {size} bytes, more than {MAX_CONTENT_BYTES}; split it into several "
            "documents or ingest the file by path"
        )
    return value


def _metadata_size(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ValueError(
            f"metadata is {size} bytes as JSON, more than {MAX_METADATA_BYTES}; keep it to short"
            " labels"
        )
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or blank")
    return value


Query = Annotated[
    str,
    Field(min_length=1, max_length=MAX_QUERY_CHARS),
    AfterValidator(_not_blank),
]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description=f"Maximum results, 1-{MAX_LIMIT}.")]
Offset = Annotated[
    int, Field(ge=0, le=MAX_OFFSET, description="Results to skip, for paging (0 = first page).")
]
Content = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CONTENT_BYTES,
        description=f"The document text (UTF-8, at most {MAX_CONTENT_BYTES} bytes).",
    ),
    AfterValidator(_not_blank),
    AfterValidator(_content_size),
]
Metadata = Annotated[
    dict[str, Any],
    Field(
        max_length=MAX_METADATA_KEYS,
        description=f"JSON object of labels (at most {MAX_METADATA_KEYS} keys and "
        f"{MAX_METADATA_BYTES} bytes as JSON).",
    ),
    AfterValidator(_metadata_size),
]
ShortText = Annotated[
    str, Field(min_length=1, max_length=MAX_SHORT_CHARS), AfterValidator(_not_blank)
]
LongText = Annotated[
    str, Field(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_not_blank)
]
Similarity = Annotated[float, Field(ge=-1.0, le=1.0)]
Score01 = Annotated[float, Field(ge=0.0, le=1.0)]
SessionId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_SHORT_CHARS,
        description="Troubleshooting session id; omit to use this connection's session.",
    ),
    AfterValidator(_not_blank),
]
