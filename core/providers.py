"""The Provider-First registry: which Apache Airflow provider package covers a system.

The catalog (`core/data/airflow_providers.json`, shipped with the package) lists the official
apache-airflow-providers-* packages with aliases and their main operators, hooks and sensors. It
is loaded into `airflow_providers` when the workbench opens, once per catalog version.
`check_provider_exists(system)` matches a free-text system name against it:

1. the provider's short name or package name (score 1.0),
2. an alias such as aws -> amazon, gcp -> google, openshift -> cncf.kubernetes (0.95),
3. an operator / hook / sensor class name, e.g. S3KeySensor (0.9),
4. word level: alias phrases inside the query and distinctive words of class names
   ("AWS S3" -> amazon), at most 0.85 and never from generic words alone.

Matching is by whole words only, so "freeipa" does not match anything through "ipa".
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.db import Database
from core.errors import InputError, NotFoundError

CATALOG_PATH = Path(__file__).parent / "data" / "airflow_providers.json"
CATALOG_META_KEY = "airflow_provider_catalog_version"
EXISTS_THRESHOLD = 0.55
MAX_QUERY_CHARS = 300

# Words that say nothing about which system is meant.
STOP_WORDS = {
    "a", "an", "the", "and", "or", "of", "for", "to", "in", "on", "with", "via", "using", "use",
    "is", "are", "there", "does", "do", "any", "which", "what", "my", "our", "provider",
    "providers", "package", "packages", "apache", "airflow", "integration", "plugin",
    "operator", "operators", "hook", "hooks", "sensor", "sensors", "server", "service",
    "services", "cluster", "connect", "connection", "deploy", "manage", "support",
}  # fmt: skip
# Class-name words too common to identify a provider on their own.
GENERIC_TOKENS = STOP_WORDS | {
    "async", "trigger", "create", "delete", "get", "list", "run", "start", "stop", "update",
    "insert", "from", "job", "jobs", "sql", "query", "execute", "file", "files", "data", "base",
    "check", "value", "object", "objects", "instance", "task", "state", "status", "message",
    "send", "publish", "api", "local", "filesystem", "remote", "index", "document", "ingest",
    "batch", "pipeline", "table", "dataset", "exists", "existence", "key", "keys", "db",
    "client", "admin", "transfer", "copy", "generic", "pod", "now", "notebook",
    "interval", "threshold", "column", "branch", "time", "date", "day", "week", "cloud",
}  # fmt: skip
_CAMEL = re.compile(r"[A-Z0-9]+(?![a-z])|[A-Z]?[a-z0-9]+")
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _camel_words(name: str) -> list[str]:
    return [w.lower() for w in _CAMEL.findall(name)]


@dataclass(frozen=True)
class ProviderEntry:
    provider_name: str
    package_name: str
    description: str
    aliases: tuple[str, ...]
    operators: tuple[str, ...]
    hooks: tuple[str, ...]
    sensors: tuple[str, ...]
    documentation_url: str
    is_installed: bool = False
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("aliases", "operators", "hooks", "sensors"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_mapping(cls, row: dict[str, Any]) -> ProviderEntry:
        return cls(
            provider_name=row["provider_name"],
            package_name=row["package_name"],
            description=row.get("description") or "",
            aliases=tuple(row.get("aliases") or ()),
            operators=tuple(row.get("operators") or ()),
            hooks=tuple(row.get("hooks") or ()),
            sensors=tuple(row.get("sensors") or ()),
            documentation_url=row.get("documentation_url") or "",
            is_installed=bool(row.get("is_installed", False)),
            version=row.get("version"),
        )


@dataclass(frozen=True)
class Catalog:
    version: str
    source: str
    entries: tuple[ProviderEntry, ...]


def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = tuple(ProviderEntry.from_mapping(p) for p in data["providers"])
    return Catalog(version=data["catalog_version"], source=data["source"], entries=entries)


def installed_version(package: str) -> str | None:
    """The version of `package` in this Python environment, or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def airflow_importable() -> bool:
    return importlib.util.find_spec("airflow") is not None


@dataclass(frozen=True)
class ProviderMatch:
    provider_name: str
    package_name: str
    score: float
    reason: str
    matched: tuple[str, ...]
    documentation_url: str
    description: str
    operators: tuple[str, ...]
    hooks: tuple[str, ...]
    sensors: tuple[str, ...]
    is_installed: bool = False
    installed_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("matched", "operators", "hooks", "sensors"):
            d[key] = list(d[key])
        return d


@dataclass(frozen=True)
class ProviderCheck:
    query: str
    exists: bool
    provider: ProviderMatch | None
    alternatives: tuple[ProviderMatch, ...]
    recommendation: str
    environment_note: str
    catalog_version: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "exists": self.exists,
            "provider": self.provider.to_dict() if self.provider else None,
            "alternatives": [a.to_dict() for a in self.alternatives],
            "recommendation": self.recommendation,
            "environment_note": self.environment_note,
            "catalog_version": self.catalog_version,
        }


@dataclass
class _Hit:
    entry: ProviderEntry
    score: float
    reason: str
    matched: list[str] = field(default_factory=list)


class ProviderMatcher:
    """Pure matching over a list of entries (no database)."""

    def __init__(self, entries: Sequence[ProviderEntry]) -> None:
        self.entries = list(entries)
        self._names: dict[tuple[str, ...], list[ProviderEntry]] = defaultdict(list)
        self._aliases: dict[tuple[str, ...], list[tuple[ProviderEntry, str]]] = defaultdict(list)
        self._classes: dict[str, list[tuple[ProviderEntry, str, str]]] = defaultdict(list)
        self._tokens: dict[str, set[str]] = defaultdict(set)
        by_name = {e.provider_name: e for e in self.entries}
        self._by_name = by_name
        for e in self.entries:
            for key in self._name_keys(e):
                self._names[key].append(e)
            for alias in e.aliases:
                words = tuple(_words(alias))
                if words:
                    self._aliases[words].append((e, alias))
            for kind, names in (("operator", e.operators), ("hook", e.hooks),
                                ("sensor", e.sensors)):  # fmt: skip
                for cls in names:
                    self._classes[cls.lower()].append((e, kind, cls))
                    for tok in _camel_words(cls):
                        if tok not in GENERIC_TOKENS and len(tok) >= 2:
                            self._tokens[tok].add(e.provider_name)

    @staticmethod
    def _name_keys(e: ProviderEntry) -> set[tuple[str, ...]]:
        parts = e.provider_name.split(".")
        keys = {tuple(_words(e.provider_name)), tuple(_words(e.package_name))}
        keys.add(("".join(_words(e.provider_name)),))
        keys.add(tuple(_words(e.package_name.removeprefix("apache-airflow-providers-"))))
        # the last part of a dotted name is how people say it: kubernetes, azure, hive, jira
        if len(parts) > 1 and parts[0] != "common" and parts[-1] not in GENERIC_TOKENS:
            keys.add(tuple(_words(parts[-1])))
        return keys

    def match(self, query: str, limit: int = 5) -> list[_Hit]:
        words = tuple(_words(query))
        if not words:
            return []
        compact = "".join(words)
        hits: dict[str, _Hit] = {}

        def offer(e: ProviderEntry, score: float, reason: str, matched: list[str]) -> None:
            old = hits.get(e.provider_name)
            if old is None or score > old.score:
                hits[e.provider_name] = _Hit(e, round(score, 3), reason, matched)

        for e in self._names.get(words, []) + self._names.get((compact,), []):
            offer(e, 1.0, "provider name", [e.provider_name])
        for key in (words, (compact,)):
            for e, alias in self._aliases.get(key, []):
                offer(e, 0.95, f"alias '{alias}'", [alias])
        for e, kind, cls in self._classes.get(compact, []):
            offer(e, 0.9, f"{kind} {cls}", [cls])
        if not hits:
            self._word_level(words, offer)
        ranked = sorted(hits.values(), key=lambda h: (-h.score, h.entry.provider_name))
        return ranked[:limit]

    def _word_level(self, words: tuple[str, ...], offer: Any) -> None:
        # versions and other bare numbers ("OpenShift 4.14") say nothing about the system
        content = {i for i, w in enumerate(words) if w not in STOP_WORDS and not w.isdigit()}
        if not content:
            return
        strong: dict[str, set[int]] = defaultdict(set)
        labels: dict[str, list[str]] = defaultdict(list)
        phrases: list[tuple[tuple[str, ...], ProviderEntry, str]] = []
        for key, entries in self._names.items():
            phrases += [(key, e, e.provider_name) for e in entries]
        for key, pairs in self._aliases.items():
            phrases += [(key, e, f"alias '{alias}'") for e, alias in pairs]
        for key, e, label in phrases:
            n = len(key)
            for i in range(len(words) - n + 1):
                if words[i : i + n] == key and not set(range(i, i + n)) <= (
                    set(range(len(words))) - content
                ):
                    strong[e.provider_name] |= set(range(i, i + n))
                    if label not in labels[e.provider_name]:
                        labels[e.provider_name].append(label)
        weak: dict[str, set[int]] = defaultdict(set)
        unique: dict[str, bool] = defaultdict(bool)
        weak_words: dict[str, list[str]] = defaultdict(list)
        for i in content:
            owners = self._tokens.get(words[i], set())
            if 0 < len(owners) <= 3:
                for name in owners:
                    weak[name].add(i)
                    unique[name] |= len(owners) == 1
                    if i not in strong[name]:
                        weak_words[name].append(words[i])
        for name in set(strong) | set(weak):
            s_cov = len(strong[name] & content) / len(content)
            w_cov = len((weak[name] - strong[name]) & content) / len(content)
            if s_cov == 0 and (w_cov < 1.0 or not unique[name]):
                continue  # class-name words alone must explain the whole query, distinctively
            score = min(0.45 + 0.4 * s_cov + 0.2 * w_cov, 0.85)
            if s_cov == 0:
                score = min(score, 0.6)
            parts = list(labels[name])
            if weak_words[name]:
                parts.append("class names mention " + ", ".join(f"'{w}'" for w in weak_words[name]))
            offer(self._by_name[name], score, "; ".join(parts), labels[name] + weak_words[name])


def _to_match(hit: _Hit) -> ProviderMatch:
    e = hit.entry
    version = installed_version(e.package_name)
    return ProviderMatch(
        provider_name=e.provider_name,
        package_name=e.package_name,
        score=hit.score,
        reason=hit.reason,
        matched=tuple(hit.matched),
        documentation_url=e.documentation_url,
        description=e.description,
        operators=e.operators,
        hooks=e.hooks,
        sensors=e.sensors,
        is_installed=version is not None,
        installed_version=version,
    )


def _environment_note() -> str:
    where = (
        "Airflow is importable here" if airflow_importable() else "Airflow is not importable here"
    )
    return (
        f"installation checked in this Python environment ({where}); the environment Airflow "
        "runs in may differ: check there with `pip show <package>`"
    )


def check_against(query: str, matcher: ProviderMatcher, catalog_version: str) -> ProviderCheck:
    """The answer for `query` against `matcher` (pure apart from the installed-version probe)."""
    query = (query or "").strip()
    if not query:
        raise InputError("the system name is empty; give a name such as 'aws', 'postgres' or 'ssh'")
    if len(query) > MAX_QUERY_CHARS:
        raise InputError(f"the system name is longer than {MAX_QUERY_CHARS} characters; shorten it")
    hits = [h for h in matcher.match(query) if h.score >= EXISTS_THRESHOLD]
    matches = [_to_match(h) for h in hits]
    best = matches[0] if matches else None
    if best is None:
        rec = (
            f"no Apache Airflow provider covers '{query}': write a plan (prerequisites, steps, "
            "tests, risks) for approval instead of ad-hoc code, or use an existing generic "
            "provider such as ssh or http if the system exposes one of those interfaces"
        )
    else:
        main = (best.operators or best.hooks or best.sensors or ("its hooks",))[0]
        rec = f"use {best.package_name} (e.g. {main}); docs: {best.documentation_url}"
        if not best.is_installed:
            rec += f"; install with `pip install {best.package_name}` where Airflow runs"
    return ProviderCheck(
        query=query,
        exists=best is not None,
        provider=best,
        alternatives=tuple(matches[1:]),
        recommendation=rec,
        environment_note=_environment_note(),
        catalog_version=catalog_version,
    )


class ProviderRegistry:
    """The catalog in `airflow_providers`, loaded on open when its version changed."""

    def __init__(self, db: Database, catalog: Catalog | None = None) -> None:
        self.db = db
        self.catalog = catalog or load_catalog()
        self._matcher: ProviderMatcher | None = None

    @classmethod
    async def open(cls, db: Database, catalog: Catalog | None = None) -> ProviderRegistry:
        registry = cls(db, catalog)
        await registry.sync()
        return registry

    async def stored_version(self) -> str | None:
        row = await self.db.fetchone(
            "SELECT value FROM store_meta WHERE key = %s", (CATALOG_META_KEY,)
        )
        return row["value"] if row else None

    async def sync(self, force: bool = False) -> bool:
        """Load the catalog into the table if its version changed; True when it wrote."""
        version = self.catalog.version
        if not force and await self.stored_version() == version:
            return False
        installed = await asyncio.to_thread(
            lambda: {
                e.package_name: installed_version(e.package_name) for e in self.catalog.entries
            }
        )
        rows = [
            (
                e.provider_name, e.package_name, json.dumps(list(e.aliases)),
                json.dumps(list(e.operators)), json.dumps(list(e.hooks)),
                json.dumps(list(e.sensors)), e.description, e.documentation_url,
                installed[e.package_name] is not None, installed[e.package_name], version,
            )
            for e in self.catalog.entries
        ]  # fmt: skip
        async with self.db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('qwb_provider_catalog'))")
            cur = await conn.execute(
                "SELECT value FROM store_meta WHERE key = %s", (CATALOG_META_KEY,)
            )
            row = await cur.fetchone()
            if not force and row and row["value"] == version:
                return False  # another process loaded it while we waited
            async with conn.cursor() as wcur:
                await wcur.executemany(
                    """
                    INSERT INTO airflow_providers (provider_name, package_name, aliases, operators,
                        hooks, sensors, description, documentation_url, is_installed, version,
                        catalog_version, last_checked, updated_at)
                    VALUES (%s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s::jsonb, %s, %s, %s, %s,
                        %s, now(), now())
                    ON CONFLICT (provider_name) DO UPDATE SET
                        package_name = EXCLUDED.package_name, aliases = EXCLUDED.aliases,
                        operators = EXCLUDED.operators, hooks = EXCLUDED.hooks,
                        sensors = EXCLUDED.sensors, description = EXCLUDED.description,
                        documentation_url = EXCLUDED.documentation_url,
                        is_installed = EXCLUDED.is_installed, version = EXCLUDED.version,
                        catalog_version = EXCLUDED.catalog_version,
                        last_checked = now(), updated_at = now()
                    """,
                    rows,
                )
            await conn.execute(
                "DELETE FROM airflow_providers WHERE catalog_version IS DISTINCT FROM %s",
                (version,),
            )
            await conn.execute(
                "INSERT INTO store_meta (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (CATALOG_META_KEY, version),
            )
        self._matcher = None
        return True

    async def entries(self) -> list[ProviderEntry]:
        rows = await self.db.fetchall("SELECT * FROM airflow_providers ORDER BY provider_name")
        return [ProviderEntry.from_mapping(r) for r in rows]

    async def _get_matcher(self) -> ProviderMatcher:
        if self._matcher is None:
            self._matcher = ProviderMatcher(await self.entries())
        return self._matcher

    async def check_provider_exists(self, system: str) -> ProviderCheck:
        """Which provider package covers `system` (name, alias, class name or words)."""
        matcher = await self._get_matcher()
        version = await self.stored_version() or self.catalog.version
        return await asyncio.to_thread(check_against, system, matcher, version)

    async def list_providers(
        self, *, installed_only: bool = False, refresh_installed: bool = True
    ) -> list[ProviderEntry]:
        """Every provider in the registry; `is_installed`/`version` re-probed in this env."""
        entries = await self.entries()
        if refresh_installed:
            versions = await asyncio.to_thread(
                lambda: [installed_version(e.package_name) for e in entries]
            )
            entries = [
                ProviderEntry(**{**e.__dict__, "is_installed": v is not None, "version": v})
                for e, v in zip(entries, versions, strict=True)
            ]
        return [e for e in entries if e.is_installed or not installed_only]

    async def get(self, name: str) -> ProviderEntry:
        row = await self.db.fetchone(
            "SELECT * FROM airflow_providers WHERE provider_name = %s OR package_name = %s",
            (name, name),
        )
        if row is None:
            raise NotFoundError(f"no provider named {name!r}; run 'qwb providers list'")
        return ProviderEntry.from_mapping(row)
