"""Search filters as operators give them (document types, a source prefix or glob, metadata,
an update time) and as SQL over documents `d`; how much of the store a filter leaves."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.bm25 import FilterSize


def glob_to_like(pattern: str) -> str:
    """A shell-style glob as a LIKE pattern (* and ? wildcards; LIKE's own wildcards escaped)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def source_filter_patterns(source: str | None) -> list[str] | None:
    """LIKE patterns (a key matching any of them passes) for a source filter as operators type it.

    A filter is a prefix, or a glob when it contains * or ?. An absolute path (or `~/…`) is
    anchored at the start of the source key. Anything else may also start at a path segment,
    so `adrs/`, `adrs/*` and `adrs/0049.md` (what the document list shows) find
    `/srv/docs/adrs/0049.md`, while `note:` still finds `note:dns-fix`."""
    text = source or ""
    if not text.strip():
        return None  # the key is kept as given otherwise: a key may hold spaces
    if text.startswith("~"):
        text = os.path.expanduser(text)
    while text.startswith("./"):
        text = text[2:]
    like = glob_to_like(text)
    if not any(ch in text for ch in "*?"):
        like += "%"
    if text.startswith("/") or like.startswith("%"):
        return [like]
    return [like, "%/" + like]


def source_filter_sql(source: str | None) -> tuple[str, dict[str, Any]]:
    """The user's source filter as SQL over documents `d` (see `source_filter_patterns`). The
    one place that turns a source filter into SQL."""
    patterns = source_filter_patterns(source)
    if not patterns:
        return "TRUE", {}
    return "d.source_key LIKE ANY(%(f_source)s::text[])", {"f_source": patterns}


@dataclass(frozen=True)
class SearchFilters:
    doc_types: tuple[str, ...] = ()
    source: str | None = None
    metadata: dict[str, Any] | None = None
    updated_since: datetime | None = None

    @property
    def active(self) -> bool:
        return bool(self.doc_types or self.source or self.metadata or self.updated_since)

    def sql(self) -> tuple[str, dict[str, Any]]:
        """A WHERE fragment over documents `d` (searches join them to their chunks `c`), and its
        parameters."""
        clauses, params = [], {}
        if self.doc_types:
            clauses.append("d.doc_type = ANY(%(f_types)s)")
            params["f_types"] = list(self.doc_types)
        source_sql, source_params = source_filter_sql(self.source)
        if source_params:
            clauses.append(source_sql)
            params.update(source_params)
        if self.metadata:
            clauses.append("d.metadata @> %(f_meta)s::jsonb")
            params["f_meta"] = json.dumps(self.metadata)
        if self.updated_since is not None:
            clauses.append("d.updated_at >= %(f_since)s")
            params["f_since"] = self.updated_since
        return (" AND ".join(clauses) or "TRUE"), params


# Counted over documents, not chunks: 1000 documents of 10k chunks at 1M chunks take 1.6 ms
# against 6.1 for their chunks' index entries.
FILTER_SIZE_SQL = """
SELECT count(*) AS documents, coalesce(sum(chunk_count), 0) AS chunks
FROM (SELECT d.chunk_count FROM rag_documents d WHERE {filters} LIMIT %(f_cap)s) s
"""


async def filter_size(conn: Any, filter_sql: str, params: dict[str, Any], cap: int) -> FilterSize:
    """How many documents and chunks pass the filters (over documents `d`), counting at most
    `cap` + 1 documents."""
    query = FILTER_SIZE_SQL.format(filters=filter_sql)
    row = await (await conn.execute(query, {**params, "f_cap": cap + 1})).fetchone()
    documents, chunks = int(row["documents"]), int(row["chunks"])
    return FilterSize(documents, chunks, more=documents > cap)


async def filter_leaves_few(conn: Any, filter_sql: str, params: dict[str, Any], cap: int) -> bool:
    """Whether the filters leave at most `cap` chunks."""
    size = await filter_size(conn, filter_sql, params, cap)
    return size.chunks <= cap and not size.more
