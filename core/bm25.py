"""The BM25 text side: top k from the impact-ordered postings of migrations/0006_bm25.sql.

Terms are PostgreSQL's `english` lexemes (the same `to_tsvector` that fills rag_chunks.tsv), so
the index, its backfill and the question agree on tokenisation. The top k is found without
scoring every match: read each query term's best `depth` postings (index order), score that
union exactly (tf, length, N, df, avgdl of the same snapshot), and stop when the k-th score beats
what any chunk outside the union could reach (the threshold of Fagin's algorithm); else read
deeper. A filter that leaves few chunks is scored exactly instead (cheaper than reading deep).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.text_cache import CacheState, TextCache

# Quoted phrases and -negation (web-search syntax) make the text side a filter as well.
_OPERATOR_RE = re.compile(r'"|(^|\s)-\S')
_NEGATED_RE = re.compile(r'(^|\s)-("[^"]*"?|\S+)')


@dataclass(frozen=True)
class Bm25Settings:
    depth: int = 1024  # postings read per query term in the first round (one round by default)
    max_depth: int = 1024  # deepest read before settling (unfiltered) or scoring exactly
    k1: float = 0.9  # the store's rag_text_stats hold the values in force (apply_text_params)
    b: float = 0.4
    proven: int = 0  # prove only the top this many of k (0: all k); the rest are the best
    # of the chunks scored exactly (fusion candidates need not each be proved)


@dataclass(frozen=True)
class FilterSize:
    """What a filter leaves: `documents` (counted up to a cap + 1) and their `chunks` (by
    rag_documents.chunk_count); `more`: it leaves more documents than were counted."""

    documents: int
    chunks: int
    more: bool = False


@dataclass(frozen=True)
class Bm25Hit:
    chunk_id: int
    score: float


@dataclass(frozen=True)
class Bm25Result:
    hits: list[Bm25Hit]
    exact: bool  # proved the true top `proven` (threshold met, or scored exhaustively)
    rounds: int
    path: str  # "threshold" | "exact (probe|lists|join)" | "cache" | "none"
    params: dict[str, Any] = field(default_factory=dict)  # term ids, idf, k1, b, avgdl used
    proven: int = 0  # how many leading hits the proof covers (all when scored exhaustively)


def query_terms_text(query: str) -> str:
    """The part of the question whose words are scored: negated words and phrases removed."""
    return _NEGATED_RE.sub(" ", query)


def has_operators(query: str) -> bool:
    return bool(_OPERATOR_RE.search(query))


def idf(n: int, df: int) -> float:
    """BM25 inverse document frequency (Lucene / bm25s 'lucene' variant): never negative."""
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


# The question's lexemes, token by token, with their store ids (NULL when no chunk has them).
TOKENS_SQL = """
SELECT d.alias, l.lexeme, t.id, t.df
FROM ts_debug('english', %(text)s) WITH ORDINALITY
     AS d(alias, description, token, dictionaries, dictionary, lexemes, ord)
CROSS JOIN LATERAL unnest(d.lexemes) AS l(lexeme)
LEFT JOIN rag_terms t ON t.term = l.lexeme AND t.df > 0
ORDER BY d.ord
"""
STATS_SQL = "SELECT chunks, total_len, ref_avgdl, k1, b, generation, cache_id FROM rag_text_stats"
COMPOUND_ALIASES = {"asciihword", "hword", "numhword"}


def select_terms(tokens: Sequence[dict[str, Any]]) -> dict[int, int]:
    """Term id -> df for the question's tokens found in the store. A hyphenated word the store
    knows whole (`ipa-server-install`, `KEYTAB-REJECT`) is scored whole: its parts would rank
    chunks that merely share one of them. Unknown compounds fall back to their parts."""
    terms: dict[int, int] = {}
    compound_known = False
    for token in tokens:
        alias = token["alias"]
        if alias in COMPOUND_ALIASES:
            compound_known = token["id"] is not None
        elif not alias.startswith("hword_"):
            compound_known = False
        elif compound_known:
            continue  # a part of a compound scored whole
        if token["id"] is not None:
            terms[token["id"]] = token["df"]
    return terms


# The tf part of a posting's BM25 score with the snapshot's avgdl (times idf: its contribution).
TF_PART = "p.tf / (p.tf + %(k1)s * (1 - %(b)s + %(b)s * p.len / %(avgdl)s))"

# Exhaustive scoring of the chunks a filter leaves. `f` lists them (ids only: an index-only scan
# by document); the score of each comes from one primary-key probe per chunk and query term
# (EXACT_BY_CHUNK_SQL), or from the terms' whole posting lists hash-joined with `f`
# (EXACT_LISTS_SQL). Only the best k, ties included, go to the chunk and document tables for
# the order of equal scores.
FILTERED_CHUNKS = """f AS MATERIALIZED (
    SELECT c.id FROM rag_chunks c JOIN rag_documents d ON d.id = c.document_id
    WHERE {filters} AND {match}
)"""
BEST_K_IN_ORDER = """top AS (
    SELECT s.chunk_id, s.score FROM scored s ORDER BY s.score DESC
    FETCH FIRST %(k)s ROWS WITH TIES
)
SELECT top.chunk_id, top.score
FROM top JOIN rag_chunks c ON c.id = top.chunk_id JOIN rag_documents d ON d.id = c.document_id
ORDER BY top.score DESC, d.source_key, c.chunk_index
LIMIT %(k)s"""


def probe_scores(chunks: str) -> str:
    """BM25 of each chunk `x.id` of `chunks` (a FROM item), one primary-key probe per chunk.
    Without the fence the planner, expecting a few postings per term, reads the terms' whole
    lists instead: 85k postings and 20–50 ms for 40 chunks at 1M chunks."""
    return f"""
SELECT x.id AS chunk_id, sum(q.idf * {TF_PART}) AS score
FROM {chunks} CROSS JOIN LATERAL (
    SELECT term_id, tf, len FROM rag_postings
    WHERE chunk_id = x.id AND term_id = ANY(%(ids)s::int[])
    OFFSET 0  -- a fence: probes by chunk, never the terms' whole lists
) p
JOIN q ON q.term_id = p.term_id
GROUP BY x.id"""


EXACT_BY_CHUNK_SQL = f"""
WITH q AS (SELECT * FROM unnest(%(ids)s::int[], %(idf)s::float8[]) AS q(term_id, idf)),
{FILTERED_CHUNKS},
scored AS ({probe_scores("f AS x")}
),
{BEST_K_IN_ORDER}
"""

EXACT_LISTS_SQL = f"""
WITH q AS (SELECT * FROM unnest(%(ids)s::int[], %(idf)s::float8[]) AS q(term_id, idf)),
{FILTERED_CHUNKS},
lists AS MATERIALIZED (
    SELECT q.term_id, q.idf, p.chunk_id, p.tf, p.len
    FROM q CROSS JOIN LATERAL (
        SELECT chunk_id, tf, len FROM rag_postings WHERE term_id = q.term_id
    ) p
),
scored AS (
    SELECT p.chunk_id, sum(p.idf * {TF_PART}) AS score
    FROM lists p JOIN f ON f.id = p.chunk_id
    GROUP BY p.chunk_id
),
{BEST_K_IN_ORDER}
"""

# Exhaustive, from the query terms' posting lists, each posting joined to its chunk and document
# for the filters (used when how many chunks the filters leave is not known).
EXACT_SQL = f"""
WITH q AS (SELECT * FROM unnest(%(ids)s::int[], %(idf)s::float8[]) AS q(term_id, idf))
SELECT p.chunk_id, sum(q.idf * {TF_PART}) AS score
FROM rag_chunks c JOIN rag_documents d ON d.id = c.document_id
JOIN rag_postings p ON p.chunk_id = c.id AND p.term_id = ANY(%(ids)s::int[])
JOIN q ON q.term_id = p.term_id
WHERE {{filters}} AND {{match}}
GROUP BY p.chunk_id, d.source_key, c.chunk_index
ORDER BY score DESC, d.source_key, c.chunk_index
LIMIT %(k)s
"""

# One threshold round. Each query term's `depth` best postings are read in index order (an
# index-only scan: the index carries tf and len), giving each chunk seen a partial score (exact
# for the terms it was seen under). The `rescore` best partial scores that pass the filters are
# scored exactly; rows with term_id report each list's last impact and length, and the `cutoff`
# row the lowest partial score rescored (no chunk left out scored higher).
THRESHOLD_SQL = f"""
WITH q AS (SELECT * FROM unnest(%(ids)s::int[], %(idf)s::float8[]) AS q(term_id, idf)),
lists AS MATERIALIZED (
    SELECT q.term_id, p.chunk_id, p.impact, q.idf * {TF_PART} AS part
    FROM q CROSS JOIN LATERAL (
        SELECT chunk_id, tf, len, impact FROM rag_postings WHERE term_id = q.term_id
        ORDER BY impact DESC LIMIT %(depth)s
    ) p
),
partial AS (SELECT chunk_id, sum(part) AS lower FROM lists GROUP BY chunk_id),
best AS MATERIALIZED (
    SELECT pa.chunk_id, pa.lower
    FROM partial pa {{join}}
    ORDER BY pa.lower DESC
    LIMIT %(rescore)s
),
scored AS (
    SELECT best.chunk_id, sum(q.idf * {TF_PART}) AS score
    FROM best CROSS JOIN LATERAL (
        SELECT term_id, tf, len FROM rag_postings
        WHERE chunk_id = best.chunk_id AND term_id = ANY(%(ids)s::int[])
        OFFSET 0  -- a fence: one primary-key probe per chunk, never the terms' whole lists
    ) p
    JOIN q ON q.term_id = p.term_id
    GROUP BY best.chunk_id
),
hits AS (
    SELECT s.chunk_id, s.score
    FROM scored s
    JOIN rag_chunks c ON c.id = s.chunk_id JOIN rag_documents d ON d.id = c.document_id
    ORDER BY s.score DESC, d.source_key, c.chunk_index
    LIMIT %(k)s
)
SELECT 'hit' AS kind, chunk_id, score, NULL::int AS term_id, NULL::bigint AS n FROM hits
UNION ALL
SELECT 'list', NULL, min(impact), term_id, count(*) FROM lists GROUP BY term_id
UNION ALL
SELECT 'cutoff', NULL, min(lower), NULL, count(*) FROM best
"""


async def bm25_top(
    conn: Any,
    query: str,
    *,
    k: int,
    filter_sql: str = "TRUE",
    filter_params: dict[str, Any] | None = None,
    few_pass_filter: bool = False,
    filter_size: FilterSize | None = None,
    settings: Bm25Settings = Bm25Settings(),
    cache: TextCache | None = None,
) -> Bm25Result:
    """The k best chunks by BM25 for `query` among those passing `filter_sql` (over aliases c
    and d); `few_pass_filter`: the filter leaves few chunks (`filter_size` says how many,
    when counted), score them all, from whichever side reads less. With
    `settings.proven` below k only that many leading hits are proved (fewer rounds); the others
    are the best of the chunks scored on the way, exact scores that a deeper read may outrank.
    Unfiltered, or under a filter (over documents `d` only) leaving at least
    `cache.min_filtered` chunks, `cache` (when it holds this snapshot's index) names the
    candidates (`cache_candidates`), scored exactly here; they are the best k unless tantivy's
    BM25 (its own k1 and b) ranked one below its depth.
    Run it inside one transaction with a snapshot (REPEATABLE READ) for consistency."""
    cur = await conn.execute(TOKENS_SQL, {"text": query_terms_text(query)}, prepare=True)
    terms = list(select_terms(await cur.fetchall()).items())
    cur = await conn.execute(STATS_SQL, prepare=True)
    stats = await cur.fetchone()
    n, total = stats["chunks"], stats["total_len"]
    if not terms or n == 0 or total == 0:
        return Bm25Result([], True, 0, "none")
    avgdl = total / n
    ref = stats["ref_avgdl"] or avgdl
    params: dict[str, Any] = {
        **(filter_params or {}),
        "ids": [t for t, _ in terms],
        "idf": [idf(n, df) for _, df in terms],
        "k1": stats["k1"],
        "b": stats["b"],
        "avgdl": avgdl,
        "k": k,
        "q": query,
    }
    match = "c.tsv @@ websearch_to_tsquery('english', %(q)s)" if has_operators(query) else "TRUE"
    weight = dict(zip(params["ids"], params["idf"], strict=True))

    filtered = filter_sql.strip() != "TRUE"
    if (
        cache is not None
        and match == "TRUE"
        and (not filtered or (filter_size is not None and filter_size.chunks >= cache.min_filtered))
    ):
        state = CacheState(str(stats["cache_id"]), int(stats["generation"]))
        chunks = await cache_candidates(
            conn, cache, state, params, filter_sql if filtered else None,
            broad_depths(cache.depth, n, filter_size),
        )  # fmt: skip
        if chunks is not None:
            cur = await conn.execute(CACHE_SQL, {**params, "chunks": chunks}, prepare=True)
            hits = [Bm25Hit(r["chunk_id"], float(r["score"])) for r in await cur.fetchall()]
            return Bm25Result(hits, False, 1, "cache", params)
    if few_pass_filter:
        counted = filter_size.chunks if filter_size is not None else None
        path = exact_path(counted, len(terms), sum(df for _, df in terms))
        return await _exact(conn, params, filter_sql, match, path=path)

    # Impacts were stored with ref_avgdl; with another avgdl a tf part can grow by at most
    # avgdl / ref_avgdl (see the migration), so the threshold is scaled to stay a true bound.
    slack = max(1.0, avgdl / ref) * (1 + 1e-6)
    join = ""  # unfiltered: rank partial scores without touching chunks
    if filtered or match != "TRUE":
        join = (
            "JOIN rag_chunks c ON c.id = pa.chunk_id JOIN rag_documents d ON d.id = c.document_id"
            f" WHERE {filter_sql} AND {match}"
        )
    sql = THRESHOLD_SQL.format(join=join)
    need = min(k, settings.proven) if settings.proven > 0 else k
    rescore = max(4 * need, 2 * k, 64)  # chunks scored exactly per round
    depth, rounds = settings.depth, 0
    while True:
        rounds += 1
        cur = await conn.execute(sql, {**params, "depth": depth, "rescore": rescore})
        hits, unseen, cutoff, rescored = [], 0.0, 0.0, 0
        for r in await cur.fetchall():
            if r["kind"] == "hit":
                hits.append(Bm25Hit(r["chunk_id"], float(r["score"])))
            elif r["kind"] == "list" and r["n"] >= depth:
                # The list goes on: a chunk not read there may still hold the term.
                unseen += weight[r["term_id"]] * float(r["score"]) * slack
            elif r["kind"] == "cutoff":
                cutoff, rescored = float(r["score"] or 0.0), int(r["n"])
        hits.sort(key=lambda h: -h.score)  # stable: keeps the SQL's tie order
        # Best possible score of a chunk not scored exactly: one never read (unseen), or one
        # read but not rescored (its partial score is at most the cutoff).
        ceiling = unseen + (cutoff if rescored >= rescore else 0.0)
        complete = unseen == 0.0 and rescored < rescore
        if complete or (len(hits) >= need and hits[need - 1].score >= ceiling):
            proved = len(hits) if complete else need
            return Bm25Result(hits, True, rounds, "threshold", params, proved)
        if depth >= settings.max_depth:
            if filtered or match != "TRUE":
                return await _exact(conn, params, filter_sql, match, rounds)
            return Bm25Result(hits, False, rounds, "threshold", params)
        depth = min(depth * 4, settings.max_depth)


async def apply_text_params(conn: Any, k1: float, b: float) -> bool:
    """Make the store's BM25 k1 and b these, re-ordering every posting's impact with them in the
    same transaction (searches read k1, b and the impacts from one snapshot, so the threshold
    bound stays true). Returns whether anything changed; a no-op when they already are."""
    cur = await conn.execute("SELECT k1, b FROM rag_text_stats")
    row = await cur.fetchone()
    if row is None or (math.isclose(row["k1"], k1) and math.isclose(row["b"], b)):
        return False
    async with conn.transaction():
        # the writers' lock: no ingest adds postings with the old parameters meanwhile
        cur = await conn.execute("SELECT k1, b FROM rag_text_stats FOR UPDATE")
        row = await cur.fetchone()
        if math.isclose(row["k1"], k1) and math.isclose(row["b"], b):
            return False
        await conn.execute("UPDATE rag_text_stats SET k1 = %s, b = %s", (k1, b))
        await conn.execute("SELECT rag_text_reimpact()")
    return True


# Probe the filtered chunks while the probes (chunks × terms) are fewer than the postings the
# lists path would read, times this. Measured with a 1 % filter (benchmarks/search_scale.py): at
# 1M chunks (10k filtered, 2–5 terms, 30k–85k postings) probing took 71 / 93 ms p50 / p95
# against 81 / 241 for the lists; at 100k (1k filtered) 8.6 / 14 against 11 / 26.
PROBE_COST = 1
# The documents a filter (over documents `d`, as SearchFilters.sql gives) leaves; which of
# some documents pass it (primary-key probes).
FILTERED_DOCUMENTS_SQL = "SELECT d.id FROM rag_documents d WHERE {filters}"
PASSING_DOCUMENTS_SQL = (
    "SELECT d.id FROM rag_documents d WHERE d.id = ANY(%(docs)s::uuid[]) AND {filters}"
)
# A broad filter reads the cache unfiltered, BROAD_MARGIN times deeper than the share of the
# store it leaves, when that reads fewer candidates than BROAD_COST times its documents: at
# 1M chunks, reading 2.5k candidates and checking their documents took ~6 µs a candidate
# (16 ms), naming 9.9k documents to tantivy ~4.3 µs a document (42 ms).
BROAD_MARGIN = 1.25
BROAD_MAX_DEPTH = 10_000
BROAD_COST = 0.7


def broad_depths(depth: int, store_chunks: int, size: FilterSize | None) -> list[int]:
    """How deep to read the cache without a filter, in turn, until `depth` of the chunks read
    pass it (empty: name the filter's documents to tantivy instead). One depth when the
    filter's share of the store is known; when only a lower bound is (`more`), from
    BROAD_MARGIN x `depth` up, x4 a step, to the depth that bound asks for."""
    if size is None or size.chunks <= 0:
        return []
    last = math.ceil(BROAD_MARGIN * depth * store_chunks / size.chunks)
    if last > BROAD_MAX_DEPTH or last > size.documents * BROAD_COST:
        return []
    depths = []
    if size.more:
        step = math.ceil(BROAD_MARGIN * depth)
        while step < last:
            depths.append(step)
            step *= 4
    return [*depths, max(last, depth)]


async def cache_candidates(
    conn: Any,
    cache: TextCache,
    state: CacheState,
    params: dict[str, Any],
    filter_sql: str | None,
    broad: Sequence[int] = (),
) -> list[int] | None:
    """The cache's candidate chunk ids for the question's terms `params["ids"]`, among the
    chunks passing `filter_sql` when given (None: the cache does not hold this snapshot).

    A broad filter (`broad` depths given, see `broad_depths`) reads the cache that deep
    unfiltered and keeps the chunks whose documents pass: tantivy's scores do not depend on
    the filter, so the first `cache.depth` passing are the filter's best, as naming its
    documents gives. When fewer pass at every depth, tantivy is asked among the documents."""
    ids = params["ids"]
    if filter_sql is None:
        found = await cache.candidates(state, ids)
        return None if found is None else [c for c, _ in found]
    for depth in broad:
        found = await cache.candidates(state, ids, depth=depth)
        if found is None:
            return None
        docs = list({d for _, d in found})
        cur = await conn.execute(
            PASSING_DOCUMENTS_SQL.format(filters=filter_sql), {**params, "docs": docs}
        )
        passing = {r["id"] for r in await cur.fetchall()}
        chunks = [c for c, d in found if d in passing][: cache.depth]
        if len(chunks) >= cache.depth or len(found) < depth:  # or every match was read
            return chunks

    async def documents() -> set[Any]:
        cur = await conn.execute(FILTERED_DOCUMENTS_SQL.format(filters=filter_sql), params)
        return {r["id"] for r in await cur.fetchall()}

    found = await cache.candidates(state, ids, documents)
    return None if found is None else [c for c, _ in found]


# The text cache's candidates (core.text_cache), scored exactly; the best k in the usual order.
CACHE_SQL = f"""
WITH q AS (SELECT * FROM unnest(%(ids)s::int[], %(idf)s::float8[]) AS q(term_id, idf)),
scored AS ({probe_scores("unnest(%(chunks)s::bigint[]) AS x(id)")}
),
{BEST_K_IN_ORDER}
"""
EXACT_SQLS = {"probe": EXACT_BY_CHUNK_SQL, "lists": EXACT_LISTS_SQL, "join": EXACT_SQL}


def exact_path(filtered_chunks: int | None, terms: int, postings: int) -> str:
    """How to score every chunk a filter leaves: `probe` each of them for each term when that
    costs less than reading the terms' `postings`, else hash-join the `lists`; `join` each
    posting to its chunk when how many chunks pass is not known."""
    if filtered_chunks is None:
        return "join"
    return "probe" if filtered_chunks * terms * PROBE_COST < postings else "lists"


async def _exact(
    conn: Any,
    params: dict[str, Any],
    filter_sql: str,
    match: str,
    rounds: int = 0,
    *,
    path: str = "join",
) -> Bm25Result:
    """Score every chunk that passes the filters (used when they leave few)."""
    sql = EXACT_SQLS[path]
    cur = await conn.execute(sql.format(filters=filter_sql, match=match), params)
    hits = [Bm25Hit(r["chunk_id"], float(r["score"])) for r in await cur.fetchall()]
    return Bm25Result(hits, True, rounds + 1, f"exact ({path})", params, len(hits))


# Exact scores of given chunks.
CHUNKS_SQL = f"""
WITH q AS (SELECT * FROM unnest(%(ids)s::int[], %(idf)s::float8[]) AS q(term_id, idf))
{probe_scores("unnest(%(chunks)s::bigint[]) AS x(id)")}
"""


async def bm25_chunk_scores(
    conn: Any, result: Bm25Result, chunk_ids: Sequence[int]
) -> dict[int, float]:
    """BM25 of `chunk_ids` for the question `result` was computed for, with the same statistics
    (0 for a chunk holding none of its terms). Scores the vector side's candidates the text side
    did not return, so score fusion sees both scores of every candidate."""
    scores = {h.chunk_id: h.score for h in result.hits}
    missing = [c for c in chunk_ids if c not in scores]
    if missing and result.params:
        cur = await conn.execute(CHUNKS_SQL, {**result.params, "chunks": missing})
        scores.update({r["chunk_id"]: float(r["score"]) for r in await cur.fetchall()})
    return {c: scores.get(c, 0.0) for c in chunk_ids}
