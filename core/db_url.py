"""Database URLs in messages: masked passwords (also in malformed URLs and driver errors), and
validation of database.url before anything connects. The one masking helper for URLs."""

from __future__ import annotations

import re

from core.errors import ConfigError

_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)(.*)(@)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)
_BARE_PASSWORD = re.compile(r"^(\s*[^\s:/@=]*:)([^\s]*)(@[^@\s]*)$")  # user:pw@host, no scheme


def redact_url(url: str) -> str:
    """The URL or `key=value` conninfo with its password replaced by ***, for logs and messages.

    Works on malformed URLs too (the password is everything between `user:` and the last `@`)."""
    masked = _URL_PASSWORD.sub(_stars, url)
    if "://" not in masked:
        masked = _BARE_PASSWORD.sub(_stars, masked)
    return _KV_PASSWORD.sub(r"\1***", masked)


def _stars(match: re.Match[str]) -> str:
    """user:PASSWORD@ -> user:***@ (an empty password, as the embedded server's, stays empty)."""
    return match.group(0) if not match.group(2) else f"{match.group(1)}***{match.group(3)}"


def _password_of(url: str) -> str | None:
    for pattern, group in ((_URL_PASSWORD, 2), (_KV_PASSWORD, 2), (_BARE_PASSWORD, 2)):
        match = pattern.search(url)
        if match and match.group(group) not in ("", "***"):
            return match.group(group).strip("'")
    return None


def mask_in(text: str, url: str | None) -> str:
    """`text` (a driver message) as one line, without the password of `url` anywhere in it."""
    flat = " ".join(str(text).split())
    if url:
        password = _password_of(url)
        if password:
            flat = flat.replace(password, "***")
        flat = flat.replace(url, redact_url(url))
    return redact_url(flat)


def check_url(url: str, origin: str = "database.url") -> None:
    """Refuse a database.url libpq cannot parse, in one line without its password."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigError(
            f"database.url ({origin}) is not a valid PostgreSQL URL: {mask_in(str(exc), url)}; "
            "expected postgresql://USER:PASSWORD@HOST:5432/DBNAME (percent-encode special "
            "characters in the password)"
        ) from None
