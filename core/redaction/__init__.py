"""Secret redaction for everything qwb stores or prints: free text, documents, JSON, names.

`redact(text)` replaces the secret part of each match with `[REDACTED]` (a private key block
with `[REDACTED PRIVATE KEY]`) and keeps everything around it, so the text stays useful for
search. It is idempotent: redacting twice changes nothing. `redact_counted` also says how many
values it replaced. `redact_tree` walks JSON-like data and knows that `{"password": "x"}` holds a
secret in its key. `redact_locator` is the narrow form for names and paths (URL credentials,
secret query parameters, issued tokens only). `mask_url` shows a URL or DSN for a human with its
password as `***`; it is the one helper for printing database and service URLs.

The rules live in submodules: `policy` (which keys and values are secrets), `pairs`
(key/value, flags, headers, URLs), `commands` (secrets given to a command), `structures`
(Kubernetes Secret data, YAML block scalars), `shapes` (key blocks, issued tokens, hashes,
machine-made values). docs/troubleshooting.md lists what is covered and the placeholder policy.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from core.redaction.commands import redact_commands
from core.redaction.engine import Run
from core.redaction.pairs import redact_locator_parts, redact_pairs
from core.redaction.policy import KEY_PLACEHOLDER, PLACEHOLDER, pair_is_secret
from core.redaction.shapes import redact_blocks, redact_shapes, redact_tokens
from core.redaction.structures import redact_structures

__all__ = [
    "KEY_PLACEHOLDER",
    "PLACEHOLDER",
    "mask_url",
    "mask_url_in",
    "redact",
    "redact_counted",
    "redact_locator",
    "redact_mapping",
    "redact_tree",
    "redact_tree_counted",
]


def redact_counted(text: str) -> tuple[str, int]:
    """`text` with secrets replaced, and the number of values replaced."""
    if not text:
        return text, 0
    run = Run()
    out = redact_blocks(text, run)
    out = redact_structures(out, run)
    out = redact_commands(out, run)
    out = redact_pairs(out, run)
    out = redact_shapes(out, run)
    return out, run.count


def redact(text: str | None) -> str | None:
    """Return `text` with secrets replaced by [REDACTED]; None stays None."""
    if not text:
        return text
    return redact_counted(text)[0]


def redact_locator(text: str) -> str:
    """A name or path with credentials in URLs, secret query parameters and issued tokens
    replaced, nothing else: `postgres://airflow:[REDACTED]@db:5432`, `…?password=[REDACTED]`."""
    if not text:
        return text
    run = Run()
    return redact_tokens(redact_locator_parts(text, run), run)


def redact_tree(value: Any, *, locator_keys: Collection[str] = ()) -> Any:
    """`value` (JSON-like) with every string redacted; a string under a secret key
    (`{"password": "x"}`) is replaced whole. Strings under `locator_keys` get
    `redact_locator`. Dicts and lists are copied; other values are returned as they are."""
    return redact_tree_counted(value, locator_keys=locator_keys)[0]


def redact_tree_counted(value: Any, *, locator_keys: Collection[str] = ()) -> tuple[Any, int]:
    """`redact_tree`, and the number of values replaced."""
    run = Run()
    return _tree(value, locator_keys, None, run), run.count


def _tree(value: Any, locator_keys: Collection[str], key: str | None, run: Run) -> Any:
    if isinstance(value, str):
        if key is not None and key in locator_keys:
            out = redact_locator(value)
            run.count += out != value
            return out
        if key is not None and pair_is_secret(key, value):
            run.count += 1
            return PLACEHOLDER
        out, n = redact_counted(value)
        run.count += n
        return out
    if isinstance(value, Mapping):
        return {k: _tree(v, locator_keys, str(k), run) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tree(v, locator_keys, key, run) for v in value]
    return value


def redact_mapping(values: dict[str, str | None], keys: tuple[str, ...]) -> dict[str, str | None]:
    """A copy of `values` with `redact` applied to the given keys."""
    return {k: (redact(v) if k in keys else v) for k, v in values.items()}


# scheme://user:PASSWORD@ (the password runs to the last @ of the word)
_MASK_USERINFO = re.compile(
    r"(?P<pre>[a-z][a-z0-9+.\-]*://[^\s:/@?#]*:)(?P<val>\S*)@", re.IGNORECASE
)
_MASK_BARE = re.compile(r"^(?P<pre>\s*[^\s:/@=]*:)(?P<val>\S*)(?=@[^@\s]*$)")  # user:pw@host
_MASK_PARAM = re.compile(
    r"(?P<pre>(?:^|[?&;\s])(?:password|passwd|pwd|sslpassword|sslkey_password|token|secret"
    r"|api_key|apikey|access_token|auth_token|sig)\s*=\s*)"
    r"(?P<val>'(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^&;#\s]+)",
    re.IGNORECASE,
)


def _stars(match: re.Match[str]) -> str:
    """PASSWORD -> *** (an empty password, as the embedded server's, stays empty)."""
    if not match.group("val"):
        return match[0]
    return f"{match.group('pre')}***" + ("@" if match[0].endswith("@") else "")


def mask_url(url: str) -> str:
    """`url` (a URL, a libpq `key=value` DSN or a bare `user:pw@host`) with passwords and tokens
    shown as ***. Never raises: a malformed URL is masked by pattern, not parsed. The one URL
    masking helper of the project (database, Marquez, LLM and lineage URLs alike)."""
    if not url:
        return url
    out = _MASK_USERINFO.sub(_stars, url)
    if "://" not in out:
        out = _MASK_BARE.sub(_stars, out)
    return _MASK_PARAM.sub(_stars, out)


_URL_PASSWORDS = (  # where a (possibly malformed) URL keeps its password
    re.compile(r"(?i)(?:^|[/@\s])[^\s:/@]*:(?P<pw>[^\s@/]+)@"),
    # `u:pw with spaces@h`: the password runs to the last @
    re.compile(r"(?i)^(?:[a-z][a-z0-9+.\-]*:?//)?[^:/@\s]*:(?P<pw>[^/].*)@"),
    re.compile(r"(?i)password\s*=\s*(?P<pw>'(?:[^'\\]|\\.)*'|[^\s&;]+)"),
)


def mask_url_in(text: str, url: str | None) -> str:
    """`text` (an error message that may quote `url`, however malformed) with the URL's
    password shown as ***, wherever it appears; and any other URL in it masked too."""
    out = text
    for pattern in _URL_PASSWORDS:
        for m in pattern.finditer(url or ""):
            secret = m.group("pw").strip("'\"")
            if len(secret) >= 2 and secret != "***":
                out = out.replace(secret, "***")
    return mask_url(out)
