"""Bootstrap: fill the memory from a site's ADRs, DAG files, provider catalog and doc folders,
then check its health. Re-running is incremental (unchanged files cost no embedding); `sync`
repeats the last run's sources and `prune` removes documents whose source file is gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from core.dag_parser import DagInfo, parse_dag_file, parse_dag_source
from core.errors import InputError, NotFoundError
from core.files import read_text_head
from core.health import HealthChecker, HealthReport, Probe
from core.rag import IngestItem, IngestProgress, IngestReport, infer_doc_type

log = logging.getLogger(__name__)

SOURCES_META_KEY = "bootstrap_sources"
LAST_RUN_META_KEY = "bootstrap_last_run"
PROVIDER_KEY_PREFIX = "provider:"
KIND_TYPES = {"adrs": "adr", "dags": "dag", "providers": "provider_doc"}  # what each must yield
DOC_SUFFIXES = {".md", ".markdown", ".rst", ".txt", ".adoc"}
ADR_FILE_RE = re.compile(r"^(?:adr[-_]?)?(\d{1,4})[-_]", re.IGNORECASE)
ADR_TITLE_RE = re.compile(r"\bADR[-\s_]?(\d{1,4})\b", re.IGNORECASE)
STATUS_LINE_RE = re.compile(r"^\W*status\W*[:\-]\W*(.+)$", re.IGNORECASE)
STATUS_WORDS = ("accepted", "proposed", "superseded", "deprecated", "rejected", "draft",
                "implemented", "amended")  # fmt: skip


# ----------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class BootstrapSources:
    """What a bootstrap reads. Folders are stored resolved, so `sync` works from any cwd."""

    adrs: list[str] = field(default_factory=list)
    dags: list[str] = field(default_factory=list)
    docs: list[str] = field(default_factory=list)
    providers: bool = True

    @property
    def empty(self) -> bool:
        return not (self.adrs or self.dags or self.docs or self.providers)

    def folders(self) -> list[str]:
        return [*self.adrs, *self.dags, *self.docs]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BootstrapSources:
        return cls(
            adrs=list(data.get("adrs") or []),
            dags=list(data.get("dags") or []),
            docs=list(data.get("docs") or []),
            providers=bool(data.get("providers", True)),
        )

    @classmethod
    def build(
        cls,
        *,
        adrs: Sequence[str | Path] = (),
        dags: Sequence[str | Path] = (),
        docs: Sequence[str | Path] = (),
        providers: bool = True,
    ) -> BootstrapSources:
        """Check the folders exist and resolve them."""

        def resolve(paths: Sequence[str | Path], what: str) -> list[str]:
            out = []
            for raw in paths:
                path = Path(raw).expanduser()
                if not path.is_dir():
                    raise InputError(f"the {what} folder {path} does not exist or is not a folder")
                out.append(str(path.resolve()))
            return out

        return cls(resolve(adrs, "ADR"), resolve(dags, "DAG"), resolve(docs, "docs"), providers)


# ----------------------------------------------------------------------------- metadata


def adr_metadata(path: Path, text: str) -> dict[str, Any]:
    """ADR number, title and status from the file name and text ({} when it is not an ADR)."""
    title = None
    for line in text.split("\n")[:60]:
        match = re.match(r"^#\s+(.+?)\s*#*\s*$", line)
        if match:
            title = match[1].strip()
            break
    number = None
    match = ADR_FILE_RE.match(path.name)
    if match:
        number = int(match[1])
    elif title and (m := ADR_TITLE_RE.search(title)):
        number = int(m[1])
    if number is None:
        return {}
    meta: dict[str, Any] = {
        "adr_number": number,
        "adr_id": f"ADR-{number:04d}",
        "title": title or path.stem,
        "filename": path.name,
        "category": "architecture",
    }
    status = _adr_status(text)
    if status:
        meta["status"] = status
    return meta


def _adr_status(text: str) -> str | None:
    lines = text.split("\n")[:200]
    for i, line in enumerate(lines):
        if re.match(r"^#{2,6}\s*status\s*$", line.strip(), re.IGNORECASE):
            for follow in lines[i + 1 : i + 8]:
                if follow.strip():
                    return _status_word(follow)
            return None
        match = STATUS_LINE_RE.match(line.strip())
        if match:
            return _status_word(match[1])
    return None


def _status_word(text: str) -> str | None:
    text = text.replace("*", "").strip().lower()
    for word in re.findall(r"[a-z]+", text)[:4]:
        if word in STATUS_WORDS:
            return word
    return None


def dag_metadata(path: Path, info: DagInfo) -> dict[str, Any]:
    meta = info.metadata()
    meta["filename"] = path.name
    meta["category"] = "dag" if info.is_dag else "dag_helper"
    if info.is_dag:
        ids = ", ".join(info.dag_ids[:3])
        meta["title"] = f"DAG {ids}: {info.description}" if info.description else f"DAG {ids}"
    elif info.description:
        meta["title"] = f"{path.name}: {info.description}"
    if len(meta.get("title", "")) > 200:
        meta["title"] = meta["title"][:199] + "…"
    return meta


# ----------------------------------------------------------------------------- providers


def load_catalog() -> list[dict[str, Any]]:
    """The provider catalog shipped with the package (core/data/airflow_providers.json)."""
    from importlib import resources

    raw = resources.files("core").joinpath("data/airflow_providers.json").read_text("utf-8")
    data = json.loads(raw)
    return list(data["providers"] if isinstance(data, dict) else data)


def provider_resolver(providers: Sequence[dict[str, Any]]) -> Callable[[str], str | None]:
    """module -> package, by the longest catalog provider_name that prefixes the module."""
    by_module = {
        "airflow.providers." + p["provider_name"]: p["package_name"]
        for p in providers
        if p.get("provider_name") and p.get("package_name")
    }

    def resolve(module: str) -> str | None:
        parts = module.split(".")
        for end in range(len(parts), 2, -1):
            package = by_module.get(".".join(parts[:end]))
            if package:
                return package
        return None

    return resolve


def provider_document(p: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    """(source_key, title, markdown text, metadata) for one catalog provider."""
    name, package = p["provider_name"], p["package_name"]
    title = f"Airflow provider {name} ({package})"
    lines = [f"# {title}", ""]
    if p.get("description"):
        lines += [str(p["description"]), ""]
    lines += [
        f"Install with `pip install {package}`; import from `airflow.providers.{name}`.",
        "Provider-First: use this provider's operators, hooks and sensors instead of custom "
        "Python or shell code when a DAG talks to this system.",
        "",
    ]
    if p.get("aliases"):
        lines += ["## Also known as", "", ", ".join(map(str, p["aliases"])), ""]
    for section, key in (("Operators", "operators"), ("Hooks", "hooks"), ("Sensors", "sensors")):
        if p.get(key):
            lines += [f"## {section}", ""] + [f"- {item}" for item in p[key]] + [""]
    if p.get("documentation_url"):
        lines += ["## Documentation", "", str(p["documentation_url"]), ""]
    meta = {
        "provider_name": name,
        "package": package,
        "aliases": list(p.get("aliases") or []),
        "category": "provider",
        "title": title,
    }
    return f"{PROVIDER_KEY_PREFIX}{package}", title, "\n".join(lines), meta


# ----------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class PartReport:
    """One source kind of a run (adrs, dags, providers, docs)."""

    kind: str
    folders: list[str]
    counts: dict[str, int]
    chunks_embedded: int
    problems: list[dict[str, Any]]  # skipped/failed items with their reasons
    redactions: int = 0  # secrets replaced in the documents written

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BootstrapReport:
    sources: BootstrapSources
    parts: list[PartReport]
    pruned: list[str]
    chunks_embedded: int
    seconds: float
    health: HealthReport | None

    @property
    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for part in self.parts:
            for key, n in part.counts.items():
                total[key] = total.get(key, 0) + n
        return total

    @property
    def redactions(self) -> int:
        return sum(part.redactions for part in self.parts)

    @property
    def status(self) -> str:
        if self.health is not None:
            return self.health.status
        return "degraded" if self.counts.get("failed") else "ingested"

    @property
    def exit_code(self) -> int:
        if self.health is not None:
            return self.health.exit_code
        return 3 if self.counts.get("failed") else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reasons": self.health.reasons if self.health else [],
            "sources": self.sources.to_dict(),
            "counts": self.counts,
            "chunks_embedded": self.chunks_embedded,
            "redactions": self.redactions,
            "seconds": round(self.seconds, 3),
            "parts": [p.to_dict() for p in self.parts],
            "pruned": self.pruned,
            "health": self.health.to_dict() if self.health else None,
        }


def _part(kind: str, folders: list[str], reports: Sequence[IngestReport]) -> PartReport:
    counts = {"added": 0, "updated": 0, "unchanged": 0, "skipped": 0, "failed": 0}
    problems = []
    embedded = redactions = 0
    for report in reports:
        for key, n in report.counts.items():
            counts[key] += n
        embedded += report.chunks_embedded
        redactions += report.redactions
        problems += [i.to_dict() for i in report.items if i.status in ("skipped", "failed")]
    return PartReport(kind, folders, counts, embedded, problems, redactions)


# ----------------------------------------------------------------------------- the service


ProgressFn = Callable[[str, IngestProgress], None]


class Bootstrapper:
    """Runs bootstraps and syncs on a Workbench (needs its db, rag, embedder and config)."""

    def __init__(self, wb: Any) -> None:
        self.wb = wb
        self.db = wb.db
        self.rag = wb.rag
        self.config = wb.config

    # ---------------------------------------------------------------- remembered sources
    async def remembered_sources(self) -> BootstrapSources | None:
        row = await self.db.fetchone(
            "SELECT value FROM store_meta WHERE key = %s", (SOURCES_META_KEY,)
        )
        return BootstrapSources.from_dict(json.loads(row["value"])) if row else None

    async def _remember(self, sources: BootstrapSources, summary: dict[str, Any]) -> None:
        async with self.db.transaction() as conn:
            for key, value in ((SOURCES_META_KEY, sources.to_dict()), (LAST_RUN_META_KEY, summary)):
                await conn.execute(
                    "INSERT INTO store_meta (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (key, json.dumps(value)),
                )

    def configured_sources(self) -> BootstrapSources | None:
        adrs, dags = self.config.get("bootstrap.adrs"), self.config.get("bootstrap.dags")
        docs = self.config.get("bootstrap.docs")
        if not (adrs or dags or docs):
            return None
        return BootstrapSources.build(
            adrs=[adrs] if adrs else [],
            dags=[dags] if dags else [],
            docs=docs,
            providers=self.config.get("bootstrap.providers"),
        )

    async def resolve_sources(self, given: BootstrapSources | None) -> BootstrapSources:
        """Given folders, else the config's, else the last run's."""
        sources = given if given is not None and given.folders() else None
        sources = sources or self.configured_sources() or await self.remembered_sources()
        if sources is None:
            raise InputError(
                "nothing to bootstrap: give --adrs DIR, --dags DIR or --docs DIR "
                "(or set bootstrap.adrs / bootstrap.dags in the config)"
            )
        if given is not None and not given.providers:
            sources = BootstrapSources(sources.adrs, sources.dags, sources.docs, False)
        return sources

    # ---------------------------------------------------------------- ingestion
    async def _ingest_adrs(self, folders: list[str], progress: ProgressFn | None) -> PartReport:
        if not folders:
            return _part("adrs", folders, [])
        files = await asyncio.to_thread(self.rag.expand_paths, [Path(f) for f in folders])
        files = [f for f in files if f.suffix.lower() in DOC_SUFFIXES]
        metas = await asyncio.to_thread(_read_metas, files, adr_metadata)
        adr_files = [f for f in files if metas.get(f)]
        other_files = [f for f in files if not metas.get(f)]

        def meta_for(path: Path, text: str) -> dict[str, Any]:
            return dict(metas.get(path) or adr_metadata(path, text))

        reports = []
        if adr_files:
            reports.append(await self.rag.ingest_paths(
                adr_files, doc_type="adr", metadata_for=meta_for,
                metadata={"bootstrap": "adrs"}, progress=_tag(progress, "adrs"),
            ))  # fmt: skip
        # READMEs, indexes and templates beside the ADRs: typed by their own name.
        by_type: dict[str, list[Path]] = {}
        for f in other_files:
            by_type.setdefault(infer_doc_type(Path(f.name), ""), []).append(f)
        for doc_type, group in sorted(by_type.items()):
            reports.append(await self.rag.ingest_paths(
                group, doc_type=doc_type, metadata={"bootstrap": "adrs"},
                progress=_tag(progress, "adrs"),
            ))  # fmt: skip
        return _part("adrs", folders, reports)

    async def _ingest_dags(
        self, folders: list[str], resolve: Callable[[str], str | None] | None,
        progress: ProgressFn | None,
    ) -> PartReport:  # fmt: skip
        if not folders:
            return _part("dags", folders, [])
        files = await asyncio.to_thread(self.rag.expand_paths, [Path(f) for f in folders])
        files = [f for f in files if f.suffix == ".py"]
        infos: dict[Path, DagInfo] = await asyncio.to_thread(
            lambda: {f: parse_dag_file(f, resolve_provider=resolve) for f in files}
        )
        dag_set = set(await asyncio.to_thread(lambda: [f for f in files if _is_dag(f, infos[f])]))
        dag_files = [f for f in files if f in dag_set]
        helper_files = [f for f in files if f not in dag_set]

        def meta_for(path: Path, text: str) -> dict[str, Any]:
            info = infos.get(path) or parse_dag_source(text, resolve_provider=resolve)
            return dag_metadata(path, info)

        reports = [
            await self.rag.ingest_paths(
                dag_files, doc_type="dag", metadata_for=meta_for,
                metadata={"bootstrap": "dags"}, progress=_tag(progress, "dags"),
            ) if dag_files else IngestReport(),
            await self.rag.ingest_paths(
                helper_files, doc_type="example", metadata_for=meta_for,
                metadata={"bootstrap": "dags"}, progress=_tag(progress, "dags"),
            ) if helper_files else IngestReport(),
        ]  # fmt: skip
        return _part("dags", folders, reports)

    async def _ingest_docs(self, folders: list[str], progress: ProgressFn | None) -> PartReport:
        if not folders:
            return _part("docs", folders, [])
        report = await self.rag.ingest_paths(
            [Path(f) for f in folders], metadata={"bootstrap": "docs"},
            progress=_tag(progress, "docs"),
        )  # fmt: skip
        return _part("docs", folders, [report])

    async def provider_catalog(self) -> list[dict[str, Any]]:
        """The registry table when it has rows (it may hold site additions), else the file."""
        rows = await self.db.fetchall(
            "SELECT provider_name, package_name, aliases, operators, hooks, sensors,"
            " description, documentation_url FROM airflow_providers ORDER BY provider_name"
        )
        return [dict(r) for r in rows] if rows else await asyncio.to_thread(load_catalog)

    async def _ingest_providers(
        self, catalog: list[dict[str, Any]], progress: ProgressFn | None
    ) -> PartReport:
        report = IngestReport()
        for n, provider in enumerate(catalog, start=1):
            key, title, text, meta = provider_document(provider)
            meta = {**meta, "bootstrap": "providers"}
            meta.pop("title")
            try:
                item = await self.rag.ingest_text(
                    text, source_key=key, doc_type="provider_doc", title=title, metadata=meta,
                    source_url=provider.get("documentation_url"),
                )  # fmt: skip
            except InputError as exc:
                item = IngestItem(key, "failed", str(exc))
            report.items.append(item)
            if item.status in ("added", "updated"):
                report.chunks_embedded += item.chunks
            if progress is not None:
                progress("providers", IngestProgress(n, len(catalog), key, report))
        return _part("providers", [], [report])

    async def _prune(self, sources: BootstrapSources, catalog: list[dict[str, Any]]) -> list[str]:
        pruned: list[str] = []
        for folder in sources.folders():
            pruned += await self.rag.delete_missing_sources(folder.rstrip(os.sep) + os.sep)
        if sources.providers:
            keep = [provider_document(p)[0] for p in catalog]
            async with self.db.transaction() as conn:
                cur = await conn.execute(
                    "DELETE FROM rag_documents WHERE doc_type = 'provider_doc'"
                    " AND source_key LIKE %s AND NOT (source_key = ANY(%s)) RETURNING source_key",
                    (PROVIDER_KEY_PREFIX + "%", keep),
                )
                pruned += [r["source_key"] for r in await cur.fetchall()]
        return pruned

    # ---------------------------------------------------------------- health
    async def auto_probes(self, kinds: Sequence[str]) -> list[Probe]:
        """Built-in probes for what bootstrap ingested: a document's title must find it."""
        per_kind = int(self.config.get("bootstrap.auto_probes"))
        if per_kind <= 0:
            return []
        probes: list[Probe] = []
        for kind in kinds:
            rows = await self.db.fetchall(
                "SELECT source_key, title, doc_type, metadata FROM rag_documents"
                " WHERE metadata->>'bootstrap' = %s AND title IS NOT NULL AND chunk_count > 0"
                " AND (%s::text IS NULL OR doc_type = %s) AND NOT metadata ? 'parse_error'"
                " AND title <> regexp_replace(source_key, '^.*/', '')"  # a real title, not a name
                " ORDER BY md5(source_key) LIMIT %s",
                (kind, KIND_TYPES.get(kind), KIND_TYPES.get(kind), per_kind),
            )
            for r in rows:
                query = r["title"]
                if r["doc_type"] == "provider_doc":
                    meta = r["metadata"] or {}
                    query = f"Airflow operators for {meta.get('provider_name', '')}: " + ", ".join(
                        (meta.get("aliases") or [])[:3]
                    )
                probes.append(Probe(query[:300], r["source_key"], r["doc_type"], "auto"))
        return probes

    async def health(self, kinds: Sequence[str] = (), *, full: bool = False) -> HealthReport:
        """The health check; an unchanged store reuses its last healthy result for
        bootstrap.health_reuse_days unless `full`."""
        checker = HealthChecker(self.db, self.rag, self.wb.embedder, self.config)
        days = 0.0 if full else float(self.config.get("bootstrap.health_reuse_days") or 0)
        return await checker.check_or_reuse(
            extra_probes=await self.auto_probes(kinds),
            expect_types=[KIND_TYPES[k] for k in kinds if k in KIND_TYPES],
            reuse_for=timedelta(days=max(days, 0.0)),
        )

    async def _sources_kinds(self, sources: BootstrapSources) -> list[str]:
        kinds = [k for k, v in (("adrs", sources.adrs), ("dags", sources.dags)) if v]
        if sources.providers:
            kinds.append("providers")
        if sources.docs:
            kinds.append("docs")
        return kinds

    async def check(self, *, full: bool = False) -> HealthReport:
        """Health of the store, with auto probes for the last run's sources."""
        sources = await self.remembered_sources()
        kinds = await self._sources_kinds(sources) if sources else []
        return await self.health(kinds, full=full)

    # ---------------------------------------------------------------- runs
    async def run(
        self,
        sources: BootstrapSources | None = None,
        *,
        prune: bool = False,
        health: bool = True,
        progress: ProgressFn | None = None,
    ) -> BootstrapReport:
        started = time.perf_counter()
        sources = await self.resolve_sources(sources)
        await self.rag.check_model()
        catalog = await self.provider_catalog() if sources.providers else []
        resolve = provider_resolver(catalog or await asyncio.to_thread(load_catalog))
        parts = [
            await self._ingest_adrs(sources.adrs, progress),
            await self._ingest_dags(sources.dags, resolve, progress),
        ]
        if sources.providers:
            parts.append(await self._ingest_providers(catalog, progress))
        parts.append(await self._ingest_docs(sources.docs, progress))
        pruned = await self._prune(sources, catalog) if prune else []
        embedded = sum(p.chunks_embedded for p in parts)
        ingest_seconds = time.perf_counter() - started
        await self._remember(
            sources,
            {"at": time.time(), "chunks_embedded": embedded, "seconds": round(ingest_seconds, 3)},
        )
        report_health = await self.health(await self._sources_kinds(sources)) if health else None
        return BootstrapReport(
            sources=sources,
            parts=parts,
            pruned=pruned,
            chunks_embedded=embedded,
            seconds=time.perf_counter() - started,
            health=report_health,
        )

    async def sync(
        self, *, prune: bool = False, health: bool = False, progress: ProgressFn | None = None
    ) -> BootstrapReport:
        """Re-ingest what changed in the last run's sources (hash first: unchanged = free)."""
        sources = await self.remembered_sources()
        if sources is None:
            raise NotFoundError(
                "no bootstrap has run on this store yet; run 'qwb bootstrap --adrs DIR --dags DIR'"
            )
        return await self.run(sources, prune=prune, health=health, progress=progress)

    async def watch(
        self,
        *,
        interval: float | None = None,
        prune: bool = False,
        on_report: Callable[[BootstrapReport], None] | None = None,
        stop: asyncio.Event | None = None,
        max_rounds: int | None = None,
        baseline: dict[str, tuple[int, int]] | None = None,
    ) -> int:
        """Sync whenever a file under the sources changes (polling); return the rounds run.
        `baseline` is the state to compare with (default: the files as they are now)."""
        interval = float(interval or self.config.get("bootstrap.watch_interval"))
        sources = await self.remembered_sources()
        if sources is None:
            raise NotFoundError("no bootstrap has run on this store yet; run 'qwb bootstrap' first")
        stop = stop or asyncio.Event()
        snapshot = baseline
        if snapshot is None:
            snapshot = await asyncio.to_thread(_snapshot, sources.folders())
        rounds = 0
        while not stop.is_set() and (max_rounds is None or rounds < max_rounds):
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                break
            except TimeoutError:
                pass
            current = await asyncio.to_thread(_snapshot, sources.folders())
            if current == snapshot:
                continue
            snapshot = current
            report = await self.sync(prune=prune, health=False)
            rounds += 1
            if on_report is not None:
                on_report(report)
        return rounds


def _is_dag(path: Path, info: DagInfo) -> bool:
    """A DAG, or a file that does not parse but mentions Airflow's DAG API (a broken DAG)."""
    if info.is_dag:
        return True
    if info.error is None:
        return False
    try:
        head = read_text_head(path, 50_000)
    except OSError:
        return False
    return bool(re.search(r"\bDAG\s*\(|@dag\b", head))


def _tag(progress: ProgressFn | None, kind: str) -> Callable[[IngestProgress], None] | None:
    if progress is None:
        return None
    return lambda p: progress(kind, p)


def _read_metas(
    files: Sequence[Path], fn: Callable[[Path, str], dict[str, Any]]
) -> dict[Path, dict[str, Any]]:
    out = {}
    for f in files:
        try:
            text = read_text_head(f, 200_000)
        except OSError:
            continue
        out[f] = fn(f, text)
    return out


def _snapshot(folders: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every file under the folders: a cheap change detector."""
    out: dict[str, tuple[int, int]] = {}
    for folder in folders:
        for root, dirs, names in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
            for name in names:
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                out[path] = (st.st_mtime_ns, st.st_size)
    return out
