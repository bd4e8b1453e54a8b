"""Secrets named by a key: `key=value`, `key: value`, `"key": "value"`, `--flag value`,
headers (Authorization, Cookie, X-Api-Key…), credentials in URLs, SQL and netrc forms."""

from __future__ import annotations

import re

from core.redaction.engine import Run, mask_value
from core.redaction.policy import (
    NOT_SECRETS,
    PLACEHOLDER,
    STRONG_WORDS,
    is_not_secret_value,
    is_placeholder,
    key_strength,
    looks_opaque,
    pair_is_secret,
    words,
)

# A key that may name a secret (key_strength decides): the words, plus the weak ones.
_KEY = rf"[\w.\-]*?(?:{STRONG_WORDS}|signature|credentials?|auth|sig|pass|pwd|pw)[\w.\-]*"
_BARE = r"[^\s,;&\"'<>)\]}]+"

# A `key=`/`key:` head; the key is checked in Python (a regex that looks for the secret words
# inside every word would try each position of the text against them).
_PAIR_HEAD = re.compile(
    r"(?<![\w.\-\\])(?P<kq>\\?[\"']?)(?P<key>[A-Za-z_\-][\w.\-]*)(?P=kq)[ \t]*"
    r"(?P<sep>=>|=(?![=~])|:(?![:/]))[ \t]*"
)
_PAIR_VALUE = re.compile(rf"(?P<vq>\\?[\"'])(?P<qval>(?:(?!(?P=vq)).)*)(?P=vq)|(?P<val>{_BARE})")
_KEY_HINT = re.compile(_KEY, re.IGNORECASE)
# YAML-style `key: value` at the start of a line: the value runs to the end of the line.
_YAML_LINE = re.compile(r"^[ \t]*(?:-[ \t]+)?[\"']?[\w.\-]+[\"']?[ \t]*:[ \t]")
_FLAG = re.compile(
    rf"(?<!\S)(?P<flag>--?[\w.\-]*?(?:{STRONG_WORDS}|pass|pw|pin)[\w\-]*)[ \t]+"
    r"(?P<val>\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s\"'\-|<>;&][^\s\"';&|]*)",
    re.IGNORECASE,
)
_FLAG_EXEMPT_FIRST = frozenset(
    "no ask prompt show use with without enable disable require allow skip".split()
)
_ARGV_FLAG = re.compile(
    rf"(?P<q>[\"'])--?[\w\-]*(?:{STRONG_WORDS}|pass|pw|pin)[\w\-]*(?P=q)\s*,\s*"
    r"(?P<vq>[\"'])(?P<val>(?:(?!(?P=vq)).)+)(?P=vq)",
    re.IGNORECASE,
)
_HEADER = re.compile(
    r"(?im)^(?P<pre>[ \t>*<-]*[\"']?(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?)"
    r"(?P<scheme>(?:bearer|basic|token|digest|negotiate|apikey|aws4-hmac-sha256|sharedkey)"
    r"[ \t]+)?(?P<val>[^\r\n\"']+)"
)
_INLINE_AUTH = re.compile(
    r"(?i)(?P<pre>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
    r"(?:bearer|basic|token|digest|negotiate)\s+)(?P<val>[^\s\"',;]+)"
)
_BEARER = re.compile(r"(?i)\b(?P<pre>bearer\s+)(?P<val>[A-Za-z0-9\-._~+/]{8,}=*)")
_COOKIE = re.compile(r"(?i)(?<![\w-])(?:set-)?cookie[ \t]*:[ \t]*")
_CURL_COOKIE = re.compile(
    r"(?<!\S)(?:-b|--cookie)[ \t]+(?:(?P<q>[\"'])(?P<qval>[^\"'\r\n]*=[^\"'\r\n]*)(?P=q)"
    r"|(?P<val>[^\s\"']*=[^\s\"']*))"
)
_COOKIE_ATTRIBUTES = frozenset(
    "path domain expires max-age samesite secure httponly priority partitioned version".split()
)
_URL_CREDS = re.compile(
    r"(?i)\b(?P<pre>[a-z][a-z0-9+.\-]*://[^\s:/@\[\]\"'`]*:)(?P<val>[^\s@/\"'`]+)(?P<post>@)"
)
_URL_TOKEN_USER = re.compile(
    r"(?i)\b(?P<pre>[a-z][a-z0-9+.\-]*://)"
    r"(?P<val>(?:gh[pousr]_|github_pat_|glpat-|x-access-token:)[^\s@/]+)(?P<post>@)"
)
_SLACK_WEBHOOK = re.compile(
    r"(?i)(?P<pre>https://hooks\.slack\.com/(?:services|workflows|triggers)/)(?P<val>[\w/\-]+)"
)
_USER_PASS_FLAG = re.compile(
    r"(?<!\S)(?P<pre>(?:-[A-Za-z]*u|--user|--proxy-user|--(?:src-|dest-|registry-)?creds)"
    r"(?:[ \t]+|=)[\"']?[^\s:\"']+:)(?P<val>[^\s\"']+)"
)
_SQL_PASSWORD = re.compile(
    r"(?i)(?P<pre>\b(?:identified\s+(?:with\s+\S+\s+)?by|password)\s+)"
    r"(?P<val>'[^'\r\n]*'|\"[^\"\r\n]*\")"
)
_NETRC = re.compile(r"(?i)(?P<pre>\blogin\s+\S+\s+password\s+)(?P<val>[^\s\"']+)")
_VAULT_TABLE = re.compile(
    r"(?im)^(?P<pre>(?:token|client_token|wrapping_token|secret_id|secret_key|access_key"
    r"|password)[ \t]{2,})(?P<val>\S+)[ \t]*$"
)
_AUTH_SCHEMES = frozenset(
    {"bearer", "basic", "token", "digest", "negotiate", "apikey", "aws4-hmac-sha256"}
)


def _pair_value_span(text: str, head: re.Match[str]) -> tuple[int, int] | None:
    """Where the value after a `_PAIR_HEAD` lies; a YAML line's value runs to the line's end.
    None when there is no value, or for a YAML block scalar or flow collection (other rules
    look inside those)."""
    value = _PAIR_VALUE.match(text, head.end())
    if value is None:
        return None
    quoted = value.group("vq") is not None
    start, end = value.span("qval" if quoted else "val")
    if quoted or head.group("sep") != ":":
        return start, end
    line_start = text.rfind("\n", 0, head.start()) + 1
    if not _YAML_LINE.match(text, line_start):
        return start, end
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    rest = re.split(r"[ \t]+#", text[start:line_end], maxsplit=1)[0].rstrip()
    if re.fullmatch(r"[|>][-+]?\d*", rest) or rest.startswith(("{", "[")):
        return None
    return start, start + len(rest)


def _sub_pair(run: Run, text: str) -> str:
    pieces: list[str] = []
    last = pos = 0
    while (m := _PAIR_HEAD.search(text, pos)) is not None:
        pos = m.end("key")  # a value that is no secret is still searched for inner pairs
        if not _KEY_HINT.fullmatch(m.group("key")):
            continue
        span = _pair_value_span(text, m)
        if span is None:
            continue
        start, end = span
        value = text[start:end]
        if value.lower() in _AUTH_SCHEMES or value.lstrip("\\\"' ").startswith(("{", "[")):
            continue  # a header's scheme; a JSON object or list: its own pairs are checked
        line_start = text.rfind("\n", 0, m.start()) + 1
        context = {"sep": m.group("sep")[0], "before": text[line_start : m.start()],
                   "after": text[end : end + 1]}  # fmt: skip
        if not pair_is_secret(m.group("key"), value, **context):
            continue
        pieces += [text[last:start], PLACEHOLDER]
        last = pos = end
        run.count += 1
    pieces.append(text[last:])
    return "".join(pieces)


def _sub_flag(m: re.Match[str]) -> str:
    flag, value = m.group("flag"), m.group("val")
    parts = words(flag)
    if not parts or parts[0] in _FLAG_EXEMPT_FIRST:
        return m.group(0)  # --ask-become-pass, --no-password: no value follows
    strength = key_strength(flag) or ("strong" if parts[-1] == "pin" else None)
    if strength is None or is_not_secret_value(flag, value, sep=" "):
        return m.group(0)
    if strength == "weak" and not looks_opaque(value):
        return m.group(0)
    return mask_value(m)


def _sub_argv(m: re.Match[str]) -> str:
    return mask_value(m)


def _sub_header(m: re.Match[str]) -> str:
    value = m.group("val").strip()
    if is_placeholder(value) or value.lower() in NOT_SECRETS or not value:
        return m.group(0)
    if not m.group("scheme") and " " in value and not re.search(r"\d", value):
        return m.group(0)  # prose after "Authorization:", e.g. "Authorization: failed for x"
    return m.group("pre") + (m.group("scheme") or "") + PLACEHOLDER


def _mask_cookie_pairs(value: str) -> str:
    out = []
    for part in value.split(";"):
        name, eq, val = part.partition("=")
        if not eq:
            bare = name.strip()
            out.append(part if bare.lower() in _COOKIE_ATTRIBUTES or is_placeholder(bare)
                       or len(bare) < 8 else part.replace(bare, PLACEHOLDER))  # fmt: skip
            continue
        if name.strip().lower() in _COOKIE_ATTRIBUTES or is_placeholder(val):
            out.append(part)
        else:
            out.append(f"{name}={PLACEHOLDER}")
    return ";".join(out)


def _sub_cookies(run: Run, text: str) -> str:
    pieces: list[str] = []
    last = 0
    for m in _COOKIE.finditer(text):
        if m.start() < last:
            continue
        start = m.end()
        line_end = text.find("\n", start)
        line_end = len(text) if line_end < 0 else line_end
        end = line_end
        quote = text[m.start() - 1 : m.start()]
        if quote in ("'", '"'):  # -H 'Cookie: a=b' http://…: the value ends at the quote
            close = text.find(quote, start, line_end)
            end = close if close >= 0 else line_end
        value = text[start:end].rstrip("\r")
        masked_value = _mask_cookie_pairs(value)
        if masked_value != value:
            run.count += 1
            pieces.append(text[last:start])
            pieces.append(masked_value)
            last = start + len(value)
    pieces.append(text[last:])
    return "".join(pieces)


def _sub_curl_cookie(m: re.Match[str]) -> str:
    group = "qval" if m.group("qval") is not None else "val"
    value = m.group(group)
    start, end = m.span(group)
    whole, base = m.group(0), m.start()
    return whole[: start - base] + _mask_cookie_pairs(value) + whole[end - base :]


def _sub_vault_table(m: re.Match[str]) -> str:
    return m.group(0) if m.group("val").lower() in NOT_SECRETS else mask_value(m)


def redact_pairs(text: str, run: Run) -> str:
    """Headers, URLs, key/value pairs, flags and the SQL/netrc/curl forms."""
    low = text.lower()
    if "authorization" in low:
        text = run.sub(_HEADER, _sub_header, text)
        text = run.sub(_INLINE_AUTH, mask_value, text)
    if "cookie" in low:
        text = _sub_cookies(run, text)
    if "-b" in text or "--cookie" in text:
        text = run.sub(_CURL_COOKIE, _sub_curl_cookie, text)
    if "bearer" in low:
        text = run.sub(_BEARER, mask_value, text)
    if "://" in text:
        text = run.sub(_SLACK_WEBHOOK, mask_value, text)
        text = run.sub(_URL_TOKEN_USER, mask_value, text)
        text = run.sub(_URL_CREDS, mask_value, text)
    text = _sub_pair(run, text)
    text = run.sub(_USER_PASS_FLAG, mask_value, text)
    text = run.sub(_ARGV_FLAG, _sub_argv, text)
    text = run.sub(_FLAG, _sub_flag, text)
    if "password" in low or "identified" in low:
        text = run.sub(_SQL_PASSWORD, mask_value, text)
    if "login" in low:
        text = run.sub(_NETRC, mask_value, text)
    text = run.sub(_VAULT_TABLE, _sub_vault_table, text)
    return text


_QUERY_PAIR = re.compile(r"(?<=[?&;])(?P<key>[\w.\-]+)=(?P<val>[^&;#\s]+)")


def redact_locator_parts(text: str, run: Run) -> str:
    """Credentials in URLs and secret query/DSN parameters only (for names and paths)."""
    if "://" in text:
        text = run.sub(_SLACK_WEBHOOK, mask_value, text)
        text = run.sub(_URL_TOKEN_USER, mask_value, text)
        text = run.sub(_URL_CREDS, mask_value, text)
    if "=" in text:
        text = run.sub(
            _QUERY_PAIR,
            lambda m: mask_value(m) if pair_is_secret(m.group("key"), m.group("val")) else m[0],
            text,
        )
    return text
