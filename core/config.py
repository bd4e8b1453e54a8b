"""Configuration: defaults < TOML file < QWB_* environment < explicit overrides.

Every value remembers where it came from, so `qwb config` can say so. Unknown keys in the file
are errors naming the key and the file. Sections and keys are declared once, in DEFAULTS.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError

APP_NAME = "qwb"
MAX_CONFIG_BYTES = 1_000_000

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
        "provider": "local",  # local (packaged MiniLM, offline) | litellm (remote)
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "api_base": None,  # litellm provider only
        "backend": "onnx",  # local provider: onnx (ONNX Runtime) | torch (sentence-transformers)
        "threads": 0,  # ONNX Runtime threads; 0 = every CPU this process may use
        "onnx_dir": None,  # exported ONNX models; unset -> XDG cache dir / qwb / models
        "batch_size": 64,
        "query_cache_size": 1024,
    },
    "rag": {
        "max_file_bytes": 2_000_000,
        "chunk_tokens": 256,
        "chunk_overlap_tokens": 32,
        # Search (core.search / core.bm25); see docs/architecture.md "Search".
        "search_candidates": 50,  # per side before fusion (rrf: at least 4 x the limit)
        "fusion": "score",  # score (scaled BM25 and cosine, weighted) | rrf (reciprocal rank)
        "rrf_k": 60,  # reciprocal rank fusion constant
        "fusion_text_share": 0.7,  # score fusion: BM25's share (the rest is cosine)
        "hnsw_ef_search": 100,  # HNSW candidate list; higher = better recall, slower
        # ...grown with the store: at least this many per million chunks (1M real: 400 -> 0.98)
        "hnsw_ef_search_per_million": 400,
        "hnsw_max_scan_tuples": 200_000,  # iterative scan budget under a filter
        "bm25_k1": 0.9,  # BM25 term-frequency saturation (the store re-orders its index on change)
        "bm25_b": 0.4,  # BM25 length normalisation (0 none, 1 full)
        "bm25_depth": 1024,  # postings read per query term in the first round
        "bm25_max_depth": 1024,  # deepest per-term read before settling or scoring exactly
        "bm25_proven": 20,  # text candidates whose rank is proved (the rest: best scored so far)
        "filter_exact_max_chunks": 20_000,  # filters leaving at most this many: both sides exact
        # The text cache (core.text_cache): a tantivy index of the postings beside the database
        # that names text candidates (unfiltered, or large filters); kept current by the TUI,
        # MCP and serve.
        "text_cache": True,
        "text_cache_depth": 200,  # candidates it names, each then scored exactly
        "text_cache_min_filtered": 5_000,  # filters leaving fewer chunks: all scored exactly
        "text_cache_dir": None,  # unset -> XDG cache dir / qwb / text-index
        # "Nothing relevant" (core.relevance): weak when the best of the top documents holds
        # less than this share of the question's rare-word (IDF) weight.
        "weak_min_coverage": 0.455,
        "weak_top_documents": 3,
    },
    "llm": {
        "manager_model": "ollama_chat/granite3.3:8b",
        "manager_api_base": "http://127.0.0.1:11434",
        "developer_model": "ollama_chat/granite-code:8b",
        "developer_api_base": "http://127.0.0.1:11434",
        "api_key": None,
        "timeout": 120.0,  # wall-clock budget of one LLM call, streamed or not (seconds)
        "max_tokens": 2048,  # most tokens one call may write
        "manager_context": None,  # the servers' context windows (tokens); unset -> asked from
        "developer_context": None,  # the server (llama.cpp /props, Ollama /api/show) or learned
        "retries": 1,
        "fallbacks": True,
        "probe_timeout": 5.0,  # seconds a status probe waits for the server
        "probe_models": False,  # also GET /models (cuts a generation on llama-cpp-python)
    },
    "agents": {
        "dag_repo": None,
        "aider_bin": None,
        "aider_timeout": 600.0,
        "step_timeout": 600.0,  # wall-clock budget of one step (a brief, a plan, a proposal)
        "run_timeout": 1800.0,  # wall-clock budget of one run, approve or override
        "whole_file_max_lines": 300,  # LLM mode: longer files are changed by a unified diff
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
        # a health check of an unchanged store reuses the last healthy result for this many
        # days (no model load, no re-embedding); 0 = always run every check
        "health_reuse_days": 7.0,
    },
}

TYPES: dict[tuple[str, str], type] = {
    ("database", "url"): str,
    ("database", "data_dir"): str,
    ("embedding", "api_base"): str,
    ("embedding", "onnx_dir"): str,
    ("rag", "text_cache_dir"): str,
    ("llm", "api_key"): str,
    ("llm", "manager_context"): int,
    ("llm", "developer_context"): int,
    ("agents", "dag_repo"): str,
    ("agents", "aider_bin"): str,
    ("agents", "auto_approve_confidence"): float,
    ("lineage", "marquez_url"): str,
    ("lineage", "serve_token"): str,
    ("mcp", "log_file"): str,
    ("tui", "log_file"): str,
}

SECRET_KEYS = {("llm", "api_key"), ("lineage", "serve_token"), ("database", "url")}

# Allowed ranges (inclusive; None = open) and choices, checked wherever a value comes from.
RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("database", "pool_min"): (0, 1000),
    ("database", "pool_max"): (1, 1000),
    ("embedding", "batch_size"): (1, 4096),
    ("embedding", "query_cache_size"): (0, 1_000_000),
    ("rag", "max_file_bytes"): (1, 2**31 - 1),
    ("rag", "chunk_tokens"): (16, 8192),
    ("rag", "chunk_overlap_tokens"): (0, 8191),
    ("rag", "fusion_text_share"): (0, 1),
    ("rag", "hnsw_ef_search"): (1, 1000),  # pgvector's limit
    ("rag", "hnsw_ef_search_per_million"): (0, 1000),
    ("rag", "bm25_k1"): (0, 10),
    ("rag", "bm25_b"): (0, 1),
    ("rag", "bm25_proven"): (0, 100_000),
    ("rag", "text_cache_depth"): (10, 10_000),
    ("rag", "text_cache_min_filtered"): (0, 2**31 - 1),
    ("rag", "weak_min_coverage"): (0, 1),
    ("rag", "weak_top_documents"): (1, 100),
    ("llm", "timeout"): (0.1, 86_400),
    ("llm", "retries"): (0, 20),
    ("agents", "aider_timeout"): (1, 86_400),
    ("agents", "auto_approve_confidence"): (0, 1),
    ("agents", "llm_attempts"): (1, 20),
    ("agents", "rag_k"): (1, 100),
    ("agents", "rag_min_similarity"): (-1, 1),
    ("agents", "similar_error_min_similarity"): (-1, 1),
    ("agents", "repeat_failures"): (1, 1000),
    ("lineage", "serve_port"): (0, 65535),
    ("bootstrap", "top_k"): (1, 100),
    ("bootstrap", "auto_probes"): (0, 100),
    ("bootstrap", "vector_samples"): (0, 1000),
    ("bootstrap", "watch_interval"): (0.1, 86_400),
}
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("rag", "fusion"): ("rrf", "score"),
    ("embedding", "provider"): ("local", "litellm"),
    ("agents", "developer_mode"): ("auto", "aider", "llm"),
}
# Lists whose items must have one type (the others hold tables, checked where they are used).
LIST_ITEMS: dict[tuple[str, str], type] = {
    ("agents", "known_systems"): str,
    ("mcp", "ingest_roots"): str,
    ("bootstrap", "docs"): str,
    ("bootstrap", "probes"): dict,
}


def shown(section: str, key: str, value: Any) -> Any:
    """A setting's value as it may be printed: tokens as ***, URLs with their password masked."""
    from core.redaction import mask_url_in

    if not isinstance(value, str) or not value:
        return value
    if (section, key) in SECRET_KEYS:
        return "***"
    return mask_url_in(value, value)  # also a malformed URL: `http//u:pw@h` -> `u:***@h`


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

    def with_overrides(self, overrides: Mapping[str, Any], origin: str = "--set") -> Config:
        values = {s: dict(kv) for s, kv in self.values.items()}
        sources = dict(self.sources)
        for dotted, raw in overrides.items():
            section, key = _split(dotted)
            values[section][key] = _coerce(section, key, raw, origin)
            sources[dotted] = origin
        config = Config(values, sources, self.path)
        _check_together(config)
        return config

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.values[name])

    def items(self) -> list[tuple[str, Any, str]]:
        """(dotted key, value, origin) for every setting; secrets are masked."""
        return [(f"{section}.{key}", shown(section, key, value), self.source(f"{section}.{key}"))
                for section, kv in self.values.items() for key, value in kv.items()]  # fmt: skip

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
    value = _coerce_type(section, key, raw, origin, expected)
    return _check_value(section, key, value, origin)


def _coerce_type(section: str, key: str, raw: Any, origin: str, expected: type) -> Any:
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
        if expected is float and isinstance(raw, int | str) and not isinstance(raw, bool):
            return float(raw)
        if expected is int and isinstance(raw, str):
            return int(raw)
        if not isinstance(raw, expected) or (expected is int and isinstance(raw, bool)):
            raise TypeError(raw)
        return raw
    except (TypeError, ValueError, OverflowError):
        masked = shown(section, key, raw)
        shown_value = "a secret value" if (section, key) in SECRET_KEYS else _shown(masked)
        raise ConfigError(
            f"{section}.{key} from {origin} must be {_type_name(expected)}, got {shown_value}"
        ) from None


def _type_name(expected: type) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text",
            list: "a list", dict: "a table"}.get(expected, expected.__name__)  # fmt: skip


def _shown(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 80 else text[:79] + "…"


def _check_value(section: str, key: str, value: Any, origin: str) -> Any:
    """Ranges, choices and list items of one coerced value; one line naming key and origin."""
    where = f"{section}.{key} from {origin}"
    if value is None:
        return value
    bounds = RANGES.get((section, key))
    if bounds is not None and isinstance(value, int | float) and not isinstance(value, bool):
        low, high = bounds
        if math.isnan(value) or not low <= value <= high:
            raise ConfigError(f"{where} must be between {low:g} and {high:g}, got {value!r}")
    choices = CHOICES.get((section, key))
    if choices is not None and value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}; got {_shown(value)}")
    item_type = LIST_ITEMS.get((section, key))
    if item_type is not None:
        for item in value:
            if not isinstance(item, item_type):
                raise ConfigError(
                    f"{where}: every item must be {_type_name(item_type)}, got {_shown(item)}"
                )
    return value


def _check_together(config: Config) -> None:
    """Settings that constrain each other."""
    pool_min, pool_max = config.get("database.pool_min"), config.get("database.pool_max")
    if pool_max < pool_min:
        raise ConfigError(
            f"database.pool_max ({pool_max}, from {config.source('database.pool_max')}) must be "
            f"at least database.pool_min ({pool_min}, from {config.source('database.pool_min')})"
        )
    chunk, overlap = config.get("rag.chunk_tokens"), config.get("rag.chunk_overlap_tokens")
    if overlap >= chunk:
        raise ConfigError(
            f"rag.chunk_overlap_tokens ({overlap}, from "
            f"{config.source('rag.chunk_overlap_tokens')}) must be smaller than rag.chunk_tokens "
            f"({chunk}, from {config.source('rag.chunk_tokens')})"
        )


def _section_error(cfg_path: Path, name: str, value: Any) -> ConfigError:
    """A top-level entry that is not a known [section] table, said plainly."""
    if name in DEFAULTS:
        return ConfigError(
            f"{cfg_path}: [{name}] must be a table of settings (a [{name}] line followed by "
            f"key = value lines), got {name} = {_shown(value)}"
        )
    homes = [section for section, keys in DEFAULTS.items() if name in keys]
    if homes:
        return ConfigError(
            f"{cfg_path}: '{name}' is a setting of [{homes[0]}], not a section; put it under a "
            f"[{homes[0]}] line"
        )
    return ConfigError(
        f"{cfg_path}: unknown section [{name}]; the sections are {', '.join(DEFAULTS)}"
    )


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
        data = _read_toml(cfg_path)
        for section, kv in data.items():
            if section not in DEFAULTS or not isinstance(kv, dict):
                raise _section_error(cfg_path, section, kv)
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
    config = config.with_overrides(overrides or {}) if overrides else config
    _check_together(config)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    """The file's TOML, read with a size bound (a config is small; /dev/zero is not)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes; is it the config file?")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({' '.join(str(exc).split())})") from None
