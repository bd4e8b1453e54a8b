"""Configuration: defaults < TOML file < QWB_* environment < explicit overrides.

Every value remembers where it came from, so `qwb config` can say so. Unknown keys in the file
are errors naming the key and the file. Sections and keys are declared once, in DEFAULTS.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError

APP_NAME = "qwb"

# section -> key -> default. None means "unset". Types are taken from the default when it is set,
# or from TYPES below when the default is None.
DEFAULTS: dict[str, dict[str, Any]] = {
    "database": {
        "url": None,  # external PostgreSQL with pgvector; unset -> embedded server
        "data_dir": None,  # embedded server's data dir; unset -> XDG data dir / pgdata
        "pool_min": 1,
        "pool_max": 8,
    },
    "embedding": {
        "provider": "local",  # local (sentence-transformers, offline) | litellm (remote)
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "api_base": None,  # litellm provider only
        "batch_size": 64,
        "query_cache_size": 1024,
    },
    "rag": {
        "max_file_bytes": 2_000_000,
        "chunk_tokens": 256,
        "chunk_overlap_tokens": 32,
    },
    "llm": {
        "manager_model": "ollama_chat/granite3.3:8b",
        "manager_api_base": "http://127.0.0.1:11434",
        "developer_model": "ollama_chat/granite-code:8b",
        "developer_api_base": "http://127.0.0.1:11434",
        "api_key": None,
        "timeout": 120.0,
        "retries": 1,
        "fallbacks": True,
    },
    "agents": {
        "dag_repo": None,
        "aider_bin": None,
        "aider_timeout": 600.0,
        "auto_approve_confidence": None,  # e.g. 0.8: auto-apply proposals at or above it
        "plans_dir": "docs/plans",
        "developer_mode": "auto",  # auto (Aider when found, else LLM) | aider | llm
        "llm_attempts": 2,  # LLM mode: tries when validation rejects the code
        "commit_on_apply": True,  # an approved proposal is committed (only its files)
        "rag_k": 5,  # RAG hits the Manager looks at
        "rag_min_similarity": 0.3,  # below this cosine similarity a hit is not context
        "similar_error_min_similarity": 0.6,  # past attempts that count as similar history
        "repeat_failures": 2,  # the same error failing this often in a session escalates
        # Systems that no Airflow provider covers (Policy 3 writes a plan for them).
        "known_systems": [
            "freeipa",
            "idm",
            "vyos",
            "kcli",
            "libvirt",
            "kvm",
            "step-ca",
            "satellite",
            "ansible",
            "opnsense",
            "pfsense",
            "proxmox",
            "ovirt",
            "haproxy",
            "certbot",
            "gitea",
            "harbor",
            "nexus",
            "terraform",
            "podman",
        ],  # fmt: skip
    },
    "lineage": {
        "marquez_url": None,
        "namespace": "qubinode",
        "serve_host": "127.0.0.1",
        "serve_port": 5050,
        "serve_token": None,
    },
    "mcp": {
        "ingest_roots": [],
        "read_only": False,
        "log_file": None,
    },
    "tui": {
        "db_check_seconds": 2.0,  # how often the status bar asks whether the database is up
        "log_file": None,  # the TUI's log (never the terminal); unset -> XDG state dir/qwb/tui.log
    },
    "bootstrap": {
        "probes": [],  # [{query, expect_source (substring or glob of source key), doc_type?}]
        "adrs": "",  # default ADR folder for `qwb bootstrap` ("" = none)
        "dags": "",  # default DAG folder
        "docs": [],  # further doc folders
        "providers": True,  # ingest the provider catalog as provider_doc documents
        "top_k": 5,  # a probe's expected source must be in this many top hits
        "auto_probes": 2,  # built-in probes per ingested source kind (from document titles)
        "vector_samples": 3,  # stored chunks re-embedded to check the vectors' model
        "watch_interval": 10.0,  # seconds between scans of `bootstrap --watch`
    },
}

TYPES: dict[tuple[str, str], type] = {
    ("database", "url"): str,
    ("database", "data_dir"): str,
    ("embedding", "api_base"): str,
    ("llm", "api_key"): str,
    ("agents", "dag_repo"): str,
    ("agents", "aider_bin"): str,
    ("agents", "auto_approve_confidence"): float,
    ("lineage", "marquez_url"): str,
    ("lineage", "serve_token"): str,
    ("mcp", "log_file"): str,
    ("tui", "log_file"): str,
}

SECRET_KEYS = {("llm", "api_key"), ("lineage", "serve_token"), ("database", "url")}


def config_dir() -> Path:
    from platformdirs import user_config_path

    return user_config_path(APP_NAME)


def data_dir() -> Path:
    from platformdirs import user_data_path

    return user_data_path(APP_NAME)


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("QWB_CONFIG"):
        return Path(env["QWB_CONFIG"]).expanduser()
    return config_dir() / "config.toml"


@dataclass
class Config:
    """Effective configuration with the origin of every value."""

    values: dict[str, dict[str, Any]]
    sources: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def get(self, dotted: str) -> Any:
        section, key = _split(dotted)
        return self.values[section][key]

    def source(self, dotted: str) -> str:
        return self.sources.get(dotted, "default")

    def with_overrides(self, overrides: Mapping[str, Any], origin: str = "flag") -> Config:
        values = {s: dict(kv) for s, kv in self.values.items()}
        sources = dict(self.sources)
        for dotted, raw in overrides.items():
            section, key = _split(dotted)
            values[section][key] = _coerce(section, key, raw, origin)
            sources[dotted] = origin
        return Config(values, sources, self.path)

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.values[name])

    def items(self) -> list[tuple[str, Any, str]]:
        """(dotted key, value, origin) for every setting; secrets are masked."""
        out = []
        for section, kv in self.values.items():
            for key, value in kv.items():
                dotted = f"{section}.{key}"
                shown = "***" if (section, key) in SECRET_KEYS and value else value
                out.append((dotted, shown, self.source(dotted)))
        return out

    @property
    def resolved_data_dir(self) -> Path:
        configured = self.get("database.data_dir")
        return Path(configured).expanduser() if configured else data_dir() / "pgdata"


def _split(dotted: str) -> tuple[str, str]:
    section, _, key = dotted.partition(".")
    if section not in DEFAULTS or key not in DEFAULTS[section]:
        raise ConfigError(f"unknown setting '{dotted}'; run 'qwb config' to list the settings")
    return section, key


def _expected_type(section: str, key: str) -> type | None:
    default = DEFAULTS[section][key]
    if default is not None:
        return type(default)
    return TYPES.get((section, key))


def _coerce(section: str, key: str, raw: Any, origin: str) -> Any:
    expected = _expected_type(section, key)
    if raw is None or expected is None:
        return raw
    try:
        if expected is bool and isinstance(raw, str):
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if expected is list and isinstance(raw, str):
            return [part for part in (p.strip() for p in raw.split(os.pathsep)) if part]
        if expected is float and isinstance(raw, int | str):
            return float(raw)
        if expected is int and isinstance(raw, str):
            return int(raw)
        if not isinstance(raw, expected) or (expected is int and isinstance(raw, bool)):
            raise TypeError(raw)
        return raw
    except (TypeError, ValueError):
        raise ConfigError(
            f"{section}.{key} from {origin} must be {expected.__name__}, got {raw!r}"
        ) from None


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    env = os.environ if env is None else env
    values = {section: dict(kv) for section, kv in DEFAULTS.items()}
    sources: dict[str, str] = {}
    cfg_path = path or default_config_path(env)
    if cfg_path.exists():
        try:
            data = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{cfg_path}: not valid TOML ({exc})") from None
        for section, kv in data.items():
            if section not in DEFAULTS or not isinstance(kv, dict):
                raise ConfigError(f"{cfg_path}: unknown section [{section}]")
            for key, raw in kv.items():
                if key not in DEFAULTS[section]:
                    raise ConfigError(f"{cfg_path}: unknown key '{key}' in [{section}]")
                values[section][key] = _coerce(section, key, raw, str(cfg_path))
                sources[f"{section}.{key}"] = str(cfg_path)
    elif path is not None:
        raise ConfigError(f"config file {path} does not exist")
    for section, kv in DEFAULTS.items():
        for key in kv:
            name = f"QWB_{section}_{key}".upper()
            if name in env:
                values[section][key] = _coerce(section, key, env[name], f"${name}")
                sources[f"{section}.{key}"] = f"${name}"
    config = Config(values, sources, cfg_path)
    return config.with_overrides(overrides or {}) if overrides else config
