"""Health of the document memory: counts, model consistency, indexes, probe queries.

`HealthChecker.check()` answers *healthy* or *degraded* with one reason per problem, each saying
what to do. Probes are `{query, expect_source, doc_type?}`: the expected source (a substring of
the source key, or a glob when it has * or ?) must come back in the top k of a hybrid search.
Probes are ranked by the retrieval evaluation's machinery (core.evaluation), as `qwb eval` does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from core.errors import ConfigError, QwbError
from core.evaluation import EvalQuestion, rag_search, rank_question
from core.relevant_entries import source_matches

EXIT_HEALTHY = 0
EXIT_DEGRADED = 3

# The indexes search depends on, with the DDL of migrations/0001_rag.sql (for --repair).
REQUIRED_INDEXES: dict[str, str] = {
    "rag_chunks_embedding_idx": (
        "CREATE INDEX rag_chunks_embedding_idx ON rag_chunks"
        " USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
    ),
    "rag_chunks_tsv_idx": "CREATE INDEX rag_chunks_tsv_idx ON rag_chunks USING gin (tsv)",
}
VECTOR_MATCH_MIN = 0.99  # a stored vector vs the same text re-embedded now
LAST_HEALTHY_KEY = "health_last_healthy"  # store_meta: {fingerprint, report} of the last one


@dataclass(frozen=True)
class Probe:
    query: str
    expect_source: str
    doc_type: str | None = None
    origin: str = "config"  # config | auto | caller

    def matches(self, source_key: str) -> bool:
        return source_matches(self.expect_source, source_key, substring=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    passed: bool
    rank: int | None
    top_sources: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {**self.probe.to_dict(), "passed": self.passed, "rank": self.rank,
                "top_sources": self.top_sources}  # fmt: skip


@dataclass(frozen=True)
class HealthReport:
    status: str  # healthy | degraded
    reasons: list[str]
    documents: int
    chunks: int
    by_type: dict[str, dict[str, int]]
    configured_model: str
    store_model: str | None
    chunk_models: dict[str, int]
    indexes: dict[str, str]  # name -> ok | missing | invalid
    vector_check: dict[str, Any]
    probes: list[ProbeResult] = field(default_factory=list)
    checked_at: str = ""
    # When the store had not changed since the last healthy check: that check's time (its
    # result is reused; the model was not loaded and nothing was re-embedded).
    reused_from: str | None = None

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HealthReport:
        probes = []
        for p in data.get("probes") or []:
            probe = Probe(p["query"], p["expect_source"], p.get("doc_type"), p.get("origin", ""))
            probes.append(ProbeResult(probe, p["passed"], p.get("rank"), p.get("top_sources", [])))
        fields_ = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**fields_, "probes": probes})

    @property
    def exit_code(self) -> int:
        return EXIT_HEALTHY if self.healthy else EXIT_DEGRADED

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["probes"] = [p.to_dict() for p in self.probes]
        return out


def probes_from_config(raw: Iterable[Any]) -> list[Probe]:
    """Validate `bootstrap.probes` entries: tables with query and expect_source (doc_type opt.)."""
    probes = []
    for n, entry in enumerate(raw or [], start=1):
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"bootstrap.probes entry {n} must be a table like "
                '{query = "...", expect_source = "..."}, got ' + repr(entry)
            )
        unknown = set(entry) - {"query", "expect_source", "doc_type"}
        query, expect = entry.get("query"), entry.get("expect_source")
        if unknown or not isinstance(query, str) or not isinstance(expect, str):
            extra = f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""
            raise ConfigError(
                f"bootstrap.probes entry {n} needs string keys query and expect_source "
                f"(doc_type optional){extra}"
            )
        if not query.strip() or not expect.strip():
            raise ConfigError(f"bootstrap.probes entry {n} has an empty query or expect_source")
        doc_type = entry.get("doc_type")
        if doc_type is not None:
            from core.rag import DOC_TYPES

            if doc_type not in DOC_TYPES:
                raise ConfigError(
                    f"bootstrap.probes entry {n}: unknown doc_type {doc_type!r}; "
                    f"use one of {', '.join(DOC_TYPES)}"
                )
        probes.append(Probe(query.strip(), expect.strip(), doc_type, "config"))
    return probes


def _as_array(value: Any) -> np.ndarray:
    """A pgvector value (Vector or ndarray) as float32."""
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)


def _chunk_text(heading_path: str, content: str) -> str:
    """What was embedded for a stored chunk (core.chunking.Chunk.embedding_text)."""
    return f"{heading_path}\n\n{content}" if heading_path else content


class HealthChecker:
    def __init__(self, db: Any, rag: Any, embedder: Any, config: Any | None = None) -> None:
        self.db = db
        self.rag = rag
        self.embedder = embedder
        self.top_k = int(config.get("bootstrap.top_k")) if config else 5
        self.vector_samples = int(config.get("bootstrap.vector_samples")) if config else 3
        self.config_probes = probes_from_config(config.get("bootstrap.probes")) if config else []

    async def index_status(self) -> dict[str, str]:
        rows = await self.db.fetchall(
            "SELECT c.relname AS name, i.indisvalid AND i.indisready AS ok"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = ANY(%s)",
            (list(REQUIRED_INDEXES),),
        )
        found = {r["name"]: ("ok" if r["ok"] else "invalid") for r in rows}
        return {name: found.get(name, "missing") for name in REQUIRED_INDEXES}

    async def repair_indexes(self) -> list[str]:
        """Create missing and rebuild invalid search indexes; return the names touched."""
        touched = []
        for name, state in (await self.index_status()).items():
            if state == "ok":
                continue
            async with self.db.connection() as conn:
                if state == "invalid":
                    await conn.execute(f"DROP INDEX IF EXISTS {name}")
                await conn.execute(REQUIRED_INDEXES[name])
            touched.append(name)
        return touched

    async def _vector_check(self) -> dict[str, Any]:
        """Re-embed a few stored chunks: vectors from another model disagree even if labelled."""
        if self.vector_samples <= 0:
            return {"sampled": 0, "min_similarity": None}
        rows = await self.db.fetchall(
            "SELECT id, heading_path, content, embedding FROM rag_chunks"
            " WHERE embedding_model = %s ORDER BY md5(id::text) LIMIT %s",
            (self.embedder.model_name, self.vector_samples),
        )
        if not rows:
            return {"sampled": 0, "min_similarity": None}
        fresh = await self.embedder.embed_documents(
            [_chunk_text(r["heading_path"], r["content"]) for r in rows]
        )
        stored = np.stack([_as_array(r["embedding"]) for r in rows])
        sims = np.sum(stored * fresh, axis=1) / (
            np.linalg.norm(stored, axis=1) * np.linalg.norm(fresh, axis=1)
        ).clip(min=1e-12)
        bad = [int(r["id"]) for r, s in zip(rows, sims, strict=True) if s < VECTOR_MATCH_MIN]
        return {"sampled": len(rows), "min_similarity": round(float(sims.min()), 4), "bad": bad}

    async def run_probes(self, probes: Sequence[Probe]) -> list[ProbeResult]:
        """Each probe must find its expected source among the top k chunk hits (ranked by
        document, as `qwb eval` ranks them)."""
        results = []
        for probe in probes:
            search = rag_search(self.rag, doc_types=[probe.doc_type] if probe.doc_type else None)
            question = EvalQuestion(probe.query, (probe.expect_source,), probe.origin)
            ranked = await rank_question(search, question, probe.matches, self.top_k,
                                         top_n=self.top_k)  # fmt: skip
            sources = [d.source_key for d in ranked.top]
            results.append(ProbeResult(probe, ranked.rank is not None, ranked.rank, sources))
        return results

    async def fingerprint(self, probes: Sequence[Probe], expect_types: Iterable[str]) -> str:
        """A digest of everything the checks look at: the documents and chunks (counts, and the
        transaction ids that last wrote them), the models, the schema, the indexes and the
        probes. Equal digests: the checks would find what they found last time."""
        # xmin changes with every insert or update of a row (a re-embedded vector, a relabelled
        # model), so its sum over the rows is a cheap "nothing was written" test.
        row = await self.db.fetchone(
            """SELECT d.n AS documents, d.x AS documents_xmin, d.declared AS declared_chunks,
                      c.n AS chunks, c.x AS chunks_xmin, c.models AS chunk_models,
                      (SELECT value FROM store_meta WHERE key = 'embedding_model') AS model,
                      (SELECT count(*) FROM schema_migrations) AS migrations
                 FROM (SELECT count(*) AS n, sum(xmin::text::bigint) AS x,
                              sum(chunk_count) AS declared FROM rag_documents) d,
                      (SELECT count(*) AS n, sum(xmin::text::bigint) AS x,
                              string_agg(DISTINCT embedding_model, ',') AS models
                         FROM rag_chunks) c"""
        )
        state = {
            "store": row,
            "indexes": await self.index_status(),
            "configured_model": self.embedder.model_name,
            "top_k": self.top_k,
            "vector_samples": self.vector_samples,
            "probes": sorted(json.dumps(p.to_dict(), sort_keys=True) for p in probes),
            "expect_types": sorted(set(expect_types)),
        }
        text = json.dumps(state, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    async def check_or_reuse(
        self,
        *,
        extra_probes: Sequence[Probe] = (),
        expect_types: Iterable[str] = (),
        reuse_for: timedelta = timedelta(0),
    ) -> HealthReport:
        """`check`, unless nothing the checks look at changed since a healthy check less than
        `reuse_for` ago: then that result, with `reused_from` set. A degraded store is always
        checked in full (and forgets the last healthy result)."""
        expect_types = list(expect_types)
        probes = [*self.config_probes, *extra_probes]
        digest = await self.fingerprint(probes, expect_types)
        saved = await self.db.fetchone(
            "SELECT value FROM store_meta WHERE key = %s", (LAST_HEALTHY_KEY,)
        )
        if saved is not None and reuse_for > timedelta(0):
            try:
                last = json.loads(saved["value"])
                checked = datetime.fromisoformat(last["report"]["checked_at"])
                if last["fingerprint"] == digest and datetime.now(UTC) - checked < reuse_for:
                    report = HealthReport.from_dict(last["report"])
                    return HealthReport(**{**report.__dict__, "reused_from": report.checked_at})
            except (ValueError, KeyError, TypeError):
                pass  # unreadable: check in full and overwrite it
        report = await self.check(extra_probes=extra_probes, expect_types=expect_types)
        async with self.db.connection() as conn:
            if report.healthy:
                value = json.dumps({"fingerprint": digest, "report": report.to_dict()})
                await conn.execute(
                    """INSERT INTO store_meta (key, value) VALUES (%s, %s)
                       ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value""",
                    (LAST_HEALTHY_KEY, value),
                )
            else:
                await conn.execute("DELETE FROM store_meta WHERE key = %s", (LAST_HEALTHY_KEY,))
        return report

    async def check(
        self,
        *,
        extra_probes: Sequence[Probe] = (),
        expect_types: Iterable[str] = (),
    ) -> HealthReport:
        """Every check runs; each problem adds one reason. `expect_types`: doc types that
        the caller ingested and that must therefore be present."""
        reasons: list[str] = []
        stats = await self.rag.stats()
        configured = self.embedder.model_name
        if stats.documents == 0:
            reasons.append(
                "the store holds no documents; run 'qwb bootstrap --adrs DIR --dags DIR'"
            )
        for doc_type in sorted(set(expect_types)):
            if stats.by_type.get(doc_type, {}).get("documents", 0) == 0:
                reasons.append(f"no {doc_type} documents were found; check the source folder")

        model_ok = True
        if stats.store_model is not None and stats.store_model != configured:
            model_ok = False
            reasons.append(
                f"the store's vectors were made by {stats.store_model} but the configured model "
                f"is {configured}; run 'qwb reindex' or configure {stats.store_model}"
            )
        foreign = {m: n for m, n in stats.embedding_models.items() if m != configured}
        if foreign:
            model_ok = False
            listed = ", ".join(f"{n} by {m}" for m, n in sorted(foreign.items()))
            reasons.append(
                f"chunks embedded with another model than {configured} ({listed}); "
                "run 'qwb reindex'"
            )

        broken = await self.db.fetchone(
            "SELECT count(*) AS n FROM rag_documents d WHERE d.chunk_count <>"
            " (SELECT count(*) FROM rag_chunks c WHERE c.document_id = d.id)"
        )
        if broken and broken["n"]:
            reasons.append(
                f"{broken['n']} document(s) have missing or extra chunks; re-ingest them "
                "(qwb sync) or delete them (qwb docs delete)"
            )

        indexes = await self.index_status()
        for name, state in indexes.items():
            if state != "ok":
                reasons.append(
                    f"index {name} is {state}, so search degrades to full scans; "
                    "run 'qwb bootstrap --check --repair'"
                )

        vector_check: dict[str, Any] = {"sampled": 0, "min_similarity": None}
        if model_ok and stats.chunks:
            vector_check = await self._vector_check()
            if vector_check.get("bad"):
                reasons.append(
                    f"{len(vector_check['bad'])} of {vector_check['sampled']} sampled chunk "
                    f"vectors do not match {configured} (similarity "
                    f"{vector_check['min_similarity']}); run 'qwb reindex'"
                )

        results: list[ProbeResult] = []
        probes = [*self.config_probes, *extra_probes]
        if probes and stats.documents and model_ok:
            try:
                results = await self.run_probes(probes)
            except QwbError as exc:
                reasons.append(f"probe queries could not run: {exc}")
            for r in results:
                if not r.passed:
                    got = ", ".join(r.top_sources[:3]) or "nothing"
                    reasons.append(
                        f"probe {r.probe.query!r} ({r.probe.origin}) expected a source matching "
                        f"{r.probe.expect_source!r} in the top {self.top_k}, got {got}"
                    )
        elif probes and not model_ok:
            reasons.append("probe queries were not run because of the embedding model mismatch")

        return HealthReport(
            status="healthy" if not reasons else "degraded",
            reasons=reasons,
            documents=stats.documents,
            chunks=stats.chunks,
            by_type=stats.by_type,
            configured_model=configured,
            store_model=stats.store_model,
            chunk_models=stats.embedding_models,
            indexes=indexes,
            vector_check=vector_check,
            probes=results,
            checked_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
