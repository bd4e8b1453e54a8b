"""Validation of database.url before anything connects (masking lives in core.redaction)."""

from __future__ import annotations

from core.errors import ConfigError
from core.redaction import mask_url_in


def one_line(text: str) -> str:
    """A driver message on one line (libpq errors span several)."""
    return " ".join(str(text).split())


def check_url(url: str, origin: str = "database.url") -> None:
    """Refuse a database.url libpq cannot parse, in one line without its password."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigError(
            f"database.url ({origin}) is not a valid PostgreSQL URL: "
            f"{one_line(mask_url_in(str(exc), url))}; expected "
            "postgresql://USER:PASSWORD@HOST:5432/DBNAME (percent-encode special "
            "characters in the password)"
        ) from None
