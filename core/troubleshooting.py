"""Troubleshooting memory: every attempt to fix something, searchable by error.

Each attempt is stored with secrets redacted, an error signature (core.signatures) that groups
recurrences, and an embedding of the error text. Sequence numbers per session come from one
atomic upsert on `troubleshooting_sessions` (the row lock serialises writers of one session).
Outcome changes are new facts in `troubleshooting_outcome_updates`, written in the same
transaction as the attempt's current result.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from core.db import Database
from core.embeddings import Embedder
from core.errors import InputError, NotFoundError
from core.redaction import redact
from core.signatures import error_signature, normalize_solution

RESULTS = ("success", "failed", "partial")
AGENTS = ("developer", "manager", "calling_llm", "user")
SOLUTION_TYPES_HINT = ("command", "config_change", "code_fix", "restart", "provider", "manual")
RRF_K = 60
MAX_TEXT_CHARS = 100_000
MAX_SHORT_CHARS = 250

_ATTEMPT_COLUMNS = """
    a.id, a.session_id, a.sequence_num, a.task_description, a.error_message, a.error_category,
    a.error_signature, a.attempted_solution, a.solution_type, a.result, a.result_details,
    a.confidence_score, a.agent, a.override_by, a.override_reason, a.dag_id, a.task_id,
    a.component, a.embedding_model, a.created_at
"""


@dataclass(frozen=True)
class Attempt:
    id: str
    session_id: str
    sequence_num: int
    task_description: str
    error_message: str | None
    error_category: str | None
    error_signature: str | None
    attempted_solution: str
    solution_type: str | None
    result: str
    result_details: str | None
    confidence_score: float | None
    agent: str
    override_by: str | None
    override_reason: str | None
    dag_id: str | None
    task_id: str | None
    component: str | None
    embedding_model: str | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Attempt:
        return cls(**{k: (str(r[k]) if k == "id" else r[k]) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class OutcomeUpdate:
    id: int
    attempt_id: str
    old_result: str
    new_result: str
    details: str | None
    changed_by: str
    changed_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AttemptDetail:
    attempt: Attempt
    updates: tuple[OutcomeUpdate, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.attempt.to_dict(), "updates": [u.to_dict() for u in self.updates]}


@dataclass(frozen=True)
class SimilarError:
    """A past attempt whose error resembles the query, with what is known about its fix."""

    attempt: Attempt
    match: str  # "signature" (same normalised error) or "similar" (hybrid search)
    similarity: float  # cosine similarity of the error embeddings
    text_rank: float
    score: float
    signature_occurrences: int  # how often this signature was seen in all sessions
    signature_sessions: int
    fix_attempts: int  # attempts of this fix (normalised) for this signature
    fix_successes: int
    fix_success_rate: float | None

    def to_dict(self) -> dict[str, Any]:
        d = self.attempt.to_dict()
        d.update({k: v for k, v in asdict(self).items() if k != "attempt"})
        return d


@dataclass(frozen=True)
class SignatureStats:
    error_signature: str
    attempts: int
    successes: int
    failures: int
    partials: int
    success_rate: float
    sessions: int
    components: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime
    sample_error: str | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["components"] = list(self.components)
        return d


@dataclass(frozen=True)
class ComponentStats:
    component: str | None
    attempts: int
    successes: int
    failures: int
    partials: int
    success_rate: float
    signatures: int
    last_seen: datetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RepeatedFailure:
    session_id: str
    error_signature: str
    failures: int
    attempt_ids: tuple[str, ...]
    last_seen: datetime
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attempt_ids"] = list(self.attempt_ids)
        return d


@dataclass(frozen=True)
class HistoryStats:
    attempts: int
    successes: int
    failures: int
    partials: int
    success_rate: float | None
    sessions: int
    signatures: int
    components: tuple[ComponentStats, ...]
    top_signatures: tuple[SignatureStats, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "successes": self.successes,
            "failures": self.failures,
            "partials": self.partials,
            "success_rate": self.success_rate,
            "sessions": self.sessions,
            "signatures": self.signatures,
            "components": [c.to_dict() for c in self.components],
            "top_signatures": [s.to_dict() for s in self.top_signatures],
        }


# ---------------------------------------------------------------------------- validation
def _text(value: str | None, what: str, *, required: bool, limit: int = MAX_TEXT_CHARS) -> Any:
    if value is None or not str(value).strip():
        if required:
            raise InputError(f"the {what} is empty; give the {what}")
        return None
    value = str(value)  # kept as given: an error's indentation is part of it
    if len(value) > limit:
        raise InputError(f"the {what} is longer than {limit} characters; shorten it")
    return value


def check_result(result: str) -> str:
    if result not in RESULTS:
        raise InputError(f"unknown result {result!r}; use one of: {', '.join(RESULTS)}")
    return result


def check_agent(agent: str) -> str:
    if agent not in AGENTS:
        raise InputError(f"unknown agent {agent!r}; use one of: {', '.join(AGENTS)}")
    return agent


def check_uuid(value: str, what: str = "attempt id") -> str:
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise InputError(f"{what} {value!r} is not a UUID; copy it from 'qwb history'") from None


def _check_limit(limit: int, top: int = 1000) -> int:
    if not 1 <= limit <= top:
        raise InputError(f"limit must be between 1 and {top}")
    return limit


def _rate(successes: int, total: int) -> float | None:
    return round(successes / total, 4) if total else None


class TroubleshootingStore:
    def __init__(self, db: Database, embedder: Embedder) -> None:
        self.db = db
        self.embedder = embedder

    # ------------------------------------------------------------------------- write
    async def log_attempt(
        self,
        session_id: str,
        task_description: str,
        attempted_solution: str,
        result: str,
        *,
        error_message: str | None = None,
        error_category: str | None = None,
        solution_type: str | None = None,
        result_details: str | None = None,
        confidence_score: float | None = None,
        agent: str = "developer",
        override_by: str | None = None,
        override_reason: str | None = None,
        dag_id: str | None = None,
        task_id: str | None = None,
        component: str | None = None,
    ) -> Attempt:
        """Store one attempt (secrets redacted) and return it with its sequence number."""
        session_id = _text(session_id, "session id", required=True, limit=MAX_SHORT_CHARS)
        task = redact(_text(task_description, "task description", required=True))
        solution = redact(_text(attempted_solution, "attempted solution", required=True))
        check_result(result)
        check_agent(agent)
        error = redact(_text(error_message, "error message", required=False))
        details = redact(_text(result_details, "result details", required=False))
        override_by = _text(override_by, "override_by", required=False, limit=MAX_SHORT_CHARS)
        reason = redact(_text(override_reason, "override reason", required=False))
        if override_by and not reason:
            raise InputError("an override needs a reason: give override_reason with override_by")
        if confidence_score is not None and not 0.0 <= float(confidence_score) <= 1.0:
            raise InputError("confidence score must be between 0 and 1")
        short = {
            "error_category": error_category, "solution_type": solution_type,
            "dag_id": dag_id, "task_id": task_id, "component": component,
        }  # fmt: skip
        short = {k: _text(v, k, required=False, limit=MAX_SHORT_CHARS) for k, v in short.items()}
        signature = error_signature(error)
        vector = (await self.embedder.embed_documents([error or task]))[0]
        params = {
            "session": session_id, "task": task, "error": error, "sig": signature,
            "solution": solution, "solution_key": normalize_solution(solution), "result": result,
            "details": details, "confidence": confidence_score, "agent": agent,
            "override_by": override_by, "reason": reason, "emb": vector,
            "model": self.embedder.model_name, **short,
        }  # fmt: skip
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO troubleshooting_sessions (session_id, last_sequence) VALUES (%s, 1)"
                " ON CONFLICT (session_id) DO UPDATE"
                " SET last_sequence = troubleshooting_sessions.last_sequence + 1"
                " RETURNING last_sequence",
                (session_id,),
            )
            params["seq"] = (await cur.fetchone())["last_sequence"]
            cur = await conn.execute(
                f"""
                INSERT INTO troubleshooting_attempts AS a (session_id, sequence_num,
                    task_description, error_message, error_category, error_signature,
                    attempted_solution, solution_key, solution_type, result, result_details,
                    confidence_score, agent, override_by, override_reason, dag_id, task_id,
                    component, embedding, embedding_model)
                VALUES (%(session)s, %(seq)s, %(task)s, %(error)s, %(error_category)s, %(sig)s,
                    %(solution)s, %(solution_key)s, %(solution_type)s, %(result)s, %(details)s,
                    %(confidence)s, %(agent)s, %(override_by)s, %(reason)s, %(dag_id)s,
                    %(task_id)s, %(component)s, %(emb)s, %(model)s)
                RETURNING {_ATTEMPT_COLUMNS}
                """,
                params,
            )
            row = await cur.fetchone()
        return Attempt.from_row(row)

    async def update_outcome(
        self, attempt_id: str, new_result: str, changed_by: str, details: str | None = None
    ) -> AttemptDetail:
        """Record a new outcome: a new fact (who, when, old -> new result), never an edit."""
        attempt_id = check_uuid(attempt_id)
        check_result(new_result)
        changed_by = _text(changed_by, "changed_by (who made the change)", required=True,
                           limit=MAX_SHORT_CHARS)  # fmt: skip
        details = redact(_text(details, "details", required=False))
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "SELECT result FROM troubleshooting_attempts WHERE id = %s FOR UPDATE",
                (attempt_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFoundError(f"no attempt {attempt_id}; list attempts with 'qwb history'")
            if row["result"] == new_result and not details:
                raise InputError(
                    f"attempt {attempt_id} already has result {new_result!r}; give details to "
                    "record a note anyway"
                )
            await conn.execute(
                "INSERT INTO troubleshooting_outcome_updates"
                " (attempt_id, old_result, new_result, details, changed_by)"
                " VALUES (%s, %s, %s, %s, %s)",
                (attempt_id, row["result"], new_result, details, changed_by),
            )
            await conn.execute(
                "UPDATE troubleshooting_attempts SET result = %s WHERE id = %s",
                (new_result, attempt_id),
            )
        return await self.get_attempt(attempt_id)

    # -------------------------------------------------------------------------- read
    async def get_attempt(self, attempt_id: str) -> AttemptDetail:
        attempt_id = check_uuid(attempt_id)
        async with self.db.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_ATTEMPT_COLUMNS} FROM troubleshooting_attempts a WHERE a.id = %s",
                (attempt_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFoundError(f"no attempt {attempt_id}; list attempts with 'qwb history'")
            cur = await conn.execute(
                "SELECT id, attempt_id, old_result, new_result, details, changed_by, changed_at"
                " FROM troubleshooting_outcome_updates WHERE attempt_id = %s ORDER BY id",
                (attempt_id,),
            )
            updates = [
                OutcomeUpdate(**{**u, "attempt_id": str(u["attempt_id"])})
                for u in await cur.fetchall()
            ]
        return AttemptDetail(Attempt.from_row(row), tuple(updates))

    async def history(
        self,
        *,
        session_id: str | None = None,
        component: str | None = None,
        dag_id: str | None = None,
        task_id: str | None = None,
        result: str | None = None,
        agent: str | None = None,
        error_signature: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Attempt]:
        """Attempts matching every filter; one session's in sequence order, else newest first."""
        if result is not None:
            check_result(result)
        if agent is not None:
            check_agent(agent)
        _check_limit(limit)
        if offset < 0:
            raise InputError("offset must be 0 or more")
        order = "a.sequence_num" if session_id else "a.created_at DESC, a.sequence_num DESC"
        sql = f"""
            SELECT {_ATTEMPT_COLUMNS} FROM troubleshooting_attempts a
            WHERE (%(session)s::text IS NULL OR a.session_id = %(session)s)
              AND (%(component)s::text IS NULL OR a.component = %(component)s)
              AND (%(dag)s::text IS NULL OR a.dag_id = %(dag)s)
              AND (%(task)s::text IS NULL OR a.task_id = %(task)s)
              AND (%(result)s::text IS NULL OR a.result = %(result)s)
              AND (%(agent)s::text IS NULL OR a.agent = %(agent)s)
              AND (%(sig)s::text IS NULL OR a.error_signature = %(sig)s)
              AND (%(since)s::timestamptz IS NULL OR a.created_at >= %(since)s)
              AND (%(until)s::timestamptz IS NULL OR a.created_at < %(until)s)
            ORDER BY {order}
            LIMIT %(limit)s OFFSET %(offset)s
        """
        params = {
            "session": session_id, "component": component, "dag": dag_id, "task": task_id,
            "result": result, "agent": agent, "sig": error_signature, "since": since,
            "until": until, "limit": limit, "offset": offset,
        }  # fmt: skip
        rows = await self.db.fetchall(sql, params)
        return [Attempt.from_row(r) for r in rows]

    async def search_similar_errors(
        self,
        error: str,
        *,
        component: str | None = None,
        only_successful: bool = False,
        limit: int = 5,
        min_similarity: float | None = None,
    ) -> list[SimilarError]:
        """Past attempts for this error: same signature first, then hybrid similarity (RRF).

        Same-signature hits come one per fix tried (a successful attempt when there is one),
        best fix success rate first; the rest are attempts on other signatures, ranked by
        reciprocal-rank fusion of vector and full-text similarity."""
        error = redact(_text(error, "error text", required=True, limit=20_000))
        _check_limit(limit, 100)
        if min_similarity is not None and not -1.0 <= min_similarity <= 1.0:
            raise InputError("min similarity must be between -1 and 1")
        signature = error_signature(error)
        vector = await self.embedder.embed_query(error)
        params = {
            "sig": signature, "emb": vector, "q": error, "component": component,
            "ok": only_successful, "limit": limit, "cand": max(limit * 4, 40), "k": RRF_K,
            "minsim": min_similarity,
        }  # fmt: skip
        filters = """
              (%(component)s::text IS NULL OR a.component = %(component)s)
          AND (NOT %(ok)s OR a.result = 'success')
        """
        sql = f"""
        WITH sig AS MATERIALIZED (
            -- one representative per fix tried for this exact signature: a success if any
            SELECT DISTINCT ON (a.solution_key) a.id,
                   count(*) OVER w AS n,
                   count(*) FILTER (WHERE a.result = 'success') OVER w AS ok
            FROM troubleshooting_attempts a
            WHERE %(sig)s::text IS NOT NULL AND a.error_signature = %(sig)s AND {filters}
            WINDOW w AS (PARTITION BY a.solution_key)
            ORDER BY a.solution_key, (a.result = 'success') DESC, a.created_at DESC
        ),
        sig_top AS MATERIALIZED (
            SELECT id, ok::float8 / n AS rate, n,
                   row_number() OVER (ORDER BY ok::float8 / n DESC, n DESC) AS rnk
            FROM sig ORDER BY rnk LIMIT %(limit)s
        ),
        vec AS MATERIALIZED (
            SELECT a.id, a.embedding <=> %(emb)s::vector AS dist
            FROM troubleshooting_attempts a
            WHERE a.embedding IS NOT NULL AND {filters}
            ORDER BY a.embedding <=> %(emb)s::vector
            LIMIT %(cand)s
        ),
        vec_ranked AS (SELECT id, row_number() OVER (ORDER BY dist) AS rnk FROM vec),
        tsq AS (
            -- any of the error's words (an error string is long: all of them would be too strict)
            SELECT CASE WHEN numnode(plainto_tsquery('english', %(q)s)) = 0 THEN NULL
                   ELSE to_tsquery('english',
                        replace(plainto_tsquery('english', %(q)s)::text, ' & ', ' | '))
                   END AS q
        ),
        txt AS MATERIALIZED (
            SELECT a.id, ts_rank_cd(a.tsv, tsq.q) AS trank
            FROM troubleshooting_attempts a, tsq
            WHERE tsq.q IS NOT NULL AND a.tsv @@ tsq.q AND {filters}
            ORDER BY trank DESC
            LIMIT %(cand)s
        ),
        txt_ranked AS (SELECT id, trank, row_number() OVER (ORDER BY trank DESC) AS rnk FROM txt),
        fused AS (
            SELECT coalesce(v.id, t.id) AS id,
                   coalesce(1.0 / (%(k)s + v.rnk), 0) + coalesce(1.0 / (%(k)s + t.rnk), 0) AS score,
                   coalesce(t.trank, 0) AS trank
            FROM vec_ranked v FULL OUTER JOIN txt_ranked t ON v.id = t.id
        ),
        hits AS (
            SELECT s.id, 0 AS tier, s.rnk AS rnk, coalesce(f.score, 0) AS score,
                   coalesce(f.trank, 0) AS trank
            FROM sig_top s LEFT JOIN fused f ON f.id = s.id
            UNION ALL
            SELECT f.id, 1, 0, f.score, f.trank
            FROM fused f JOIN troubleshooting_attempts o ON o.id = f.id
            WHERE o.error_signature IS DISTINCT FROM %(sig)s
        )
        SELECT {_ATTEMPT_COLUMNS}, h.tier, h.score, h.trank,
               CASE WHEN a.embedding IS NULL THEN 0
                    ELSE 1 - (a.embedding <=> %(emb)s::vector) END AS similarity,
               occ.n AS occurrences, occ.sessions, fix.n AS fix_attempts, fix.ok AS fix_successes
        FROM hits h
        JOIN troubleshooting_attempts a ON a.id = h.id
        LEFT JOIN LATERAL (
            SELECT count(*) AS n, count(DISTINCT b.session_id) AS sessions
            FROM troubleshooting_attempts b WHERE b.error_signature = a.error_signature
        ) occ ON true
        LEFT JOIN LATERAL (
            SELECT count(*) AS n, count(*) FILTER (WHERE b.result = 'success') AS ok
            FROM troubleshooting_attempts b
            WHERE b.error_signature = a.error_signature AND b.solution_key = a.solution_key
        ) fix ON true
        WHERE h.tier = 0 OR %(minsim)s::float8 IS NULL
           OR 1 - (a.embedding <=> %(emb)s::vector) >= %(minsim)s
        ORDER BY h.tier, h.rnk, h.score DESC, similarity DESC, a.created_at DESC
        LIMIT %(limit)s
        """
        async with self.db.transaction() as conn:
            await conn.execute("SET LOCAL hnsw.ef_search = 100")
            if component or only_successful:
                await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cur = await conn.execute(sql, params)
            rows = await cur.fetchall()
        out = []
        for r in rows:
            fix_n, fix_ok = int(r["fix_attempts"] or 0), int(r["fix_successes"] or 0)
            out.append(
                SimilarError(
                    attempt=Attempt.from_row(r),
                    match="signature" if r["tier"] == 0 else "similar",
                    similarity=round(float(r["similarity"]), 4),
                    text_rank=round(float(r["trank"]), 4),
                    score=round(float(r["score"]), 6),
                    signature_occurrences=int(r["occurrences"] or 0),
                    signature_sessions=int(r["sessions"] or 0),
                    fix_attempts=fix_n,
                    fix_successes=fix_ok,
                    fix_success_rate=_rate(fix_ok, fix_n),
                )
            )
        return out

    # ------------------------------------------------------------------------- stats
    async def signature_stats(
        self,
        *,
        component: str | None = None,
        error_signature: str | None = None,
        since: datetime | None = None,
        limit: int = 20,
    ) -> list[SignatureStats]:
        """Per signature: attempts, outcome counts, success rate, sessions, first/last seen."""
        _check_limit(limit)
        rows = await self.db.fetchall(
            """
            SELECT a.error_signature, count(*) AS attempts,
                   count(*) FILTER (WHERE result = 'success') AS successes,
                   count(*) FILTER (WHERE result = 'failed') AS failures,
                   count(*) FILTER (WHERE result = 'partial') AS partials,
                   count(DISTINCT session_id) AS sessions,
                   array_remove(array_agg(DISTINCT component), NULL) AS components,
                   min(created_at) AS first_seen, max(created_at) AS last_seen,
                   (array_agg(error_message ORDER BY created_at DESC))[1] AS sample_error
            FROM troubleshooting_attempts a
            WHERE a.error_signature IS NOT NULL
              AND (%(component)s::text IS NULL OR a.component = %(component)s)
              AND (%(sig)s::text IS NULL OR a.error_signature = %(sig)s)
              AND (%(since)s::timestamptz IS NULL OR a.created_at >= %(since)s)
            GROUP BY a.error_signature
            ORDER BY attempts DESC, last_seen DESC
            LIMIT %(limit)s
            """,
            {"component": component, "sig": error_signature, "since": since, "limit": limit},
        )
        return [
            SignatureStats(
                error_signature=r["error_signature"],
                attempts=r["attempts"],
                successes=r["successes"],
                failures=r["failures"],
                partials=r["partials"],
                success_rate=round(r["successes"] / r["attempts"], 4),
                sessions=r["sessions"],
                components=tuple(sorted(r["components"] or ())),
                first_seen=r["first_seen"],
                last_seen=r["last_seen"],
                sample_error=r["sample_error"],
            )
            for r in rows
        ]

    async def component_stats(self, *, since: datetime | None = None) -> list[ComponentStats]:
        """Per component (None = attempts without one): attempts, outcomes, success rate."""
        rows = await self.db.fetchall(
            """
            SELECT component, count(*) AS attempts,
                   count(*) FILTER (WHERE result = 'success') AS successes,
                   count(*) FILTER (WHERE result = 'failed') AS failures,
                   count(*) FILTER (WHERE result = 'partial') AS partials,
                   count(DISTINCT error_signature) AS signatures,
                   max(created_at) AS last_seen
            FROM troubleshooting_attempts
            WHERE %(since)s::timestamptz IS NULL OR created_at >= %(since)s
            GROUP BY component
            ORDER BY attempts DESC, component NULLS LAST
            """,
            {"since": since},
        )
        return [
            ComponentStats(
                component=r["component"],
                attempts=r["attempts"],
                successes=r["successes"],
                failures=r["failures"],
                partials=r["partials"],
                success_rate=round(r["successes"] / r["attempts"], 4),
                signatures=r["signatures"],
                last_seen=r["last_seen"],
            )
            for r in rows
        ]

    async def stats(self, *, since: datetime | None = None, top: int = 10) -> HistoryStats:
        row = await self.db.fetchone(
            """
            SELECT count(*) AS attempts,
                   count(*) FILTER (WHERE result = 'success') AS successes,
                   count(*) FILTER (WHERE result = 'failed') AS failures,
                   count(*) FILTER (WHERE result = 'partial') AS partials,
                   count(DISTINCT session_id) AS sessions,
                   count(DISTINCT error_signature) AS signatures
            FROM troubleshooting_attempts
            WHERE %(since)s::timestamptz IS NULL OR created_at >= %(since)s
            """,
            {"since": since},
        )
        assert row is not None
        return HistoryStats(
            attempts=row["attempts"],
            successes=row["successes"],
            failures=row["failures"],
            partials=row["partials"],
            success_rate=_rate(row["successes"], row["attempts"]),
            sessions=row["sessions"],
            signatures=row["signatures"],
            components=tuple(await self.component_stats(since=since)),
            top_signatures=tuple(await self.signature_stats(since=since, limit=top)),
        )

    async def repeated_failures(
        self,
        *,
        session_id: str | None = None,
        error_signature: str | None = None,
        min_failures: int = 2,
    ) -> list[RepeatedFailure]:
        """Signatures that failed at least `min_failures` times within one session."""
        if min_failures < 1:
            raise InputError("min failures must be 1 or more")
        rows = await self.db.fetchall(
            """
            SELECT session_id, error_signature, count(*) AS failures,
                   array_agg(id ORDER BY sequence_num) AS ids, max(created_at) AS last_seen,
                   (array_agg(error_message ORDER BY sequence_num DESC))[1] AS last_error
            FROM troubleshooting_attempts
            WHERE result = 'failed' AND error_signature IS NOT NULL
              AND (%(session)s::text IS NULL OR session_id = %(session)s)
              AND (%(sig)s::text IS NULL OR error_signature = %(sig)s)
            GROUP BY session_id, error_signature
            HAVING count(*) >= %(min)s
            ORDER BY last_seen DESC
            """,
            {"session": session_id, "sig": error_signature, "min": min_failures},
        )
        return [
            RepeatedFailure(
                session_id=r["session_id"],
                error_signature=r["error_signature"],
                failures=r["failures"],
                attempt_ids=tuple(str(i) for i in r["ids"]),
                last_seen=r["last_seen"],
                last_error=r["last_error"],
            )
            for r in rows
        ]

    async def is_repeated_failure(
        self, session_id: str, error: str, min_failures: int = 2
    ) -> RepeatedFailure | None:
        """The escalation rule: has this error (by signature) failed >= 2 times in the session?"""
        signature = error_signature(redact(_text(error, "error text", required=True)))
        found = await self.repeated_failures(
            session_id=session_id, error_signature=signature, min_failures=min_failures
        )
        return found[0] if found else None

    async def sessions(self, limit: int = 50) -> list[dict[str, Any]]:
        """Troubleshooting sessions, newest activity first, with attempt counts."""
        _check_limit(limit)
        return await self.db.fetchall(
            """
            SELECT session_id, count(*) AS attempts,
                   count(*) FILTER (WHERE result = 'success') AS successes,
                   min(created_at) AS started_at, max(created_at) AS last_at
            FROM troubleshooting_attempts GROUP BY session_id
            ORDER BY last_at DESC LIMIT %s
            """,
            (limit,),
        )
