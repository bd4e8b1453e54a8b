"""Secret redaction for free text before it is stored (errors, fixes, details, reasons).

`redact(text)` replaces the secret part of a match with a placeholder and keeps everything around
it, so the text stays useful for search. It is idempotent: redacting twice changes nothing.
Covered: PEM private key blocks, Authorization/Cookie headers, bearer tokens, credentials in URLs,
`key=value` / `key: value` / `"key": "value"` pairs with a secret-sounding key, `--password x`
style flags, `curl -u user:pass`, netrc lines, and well-known token shapes (AWS access key ids,
GitHub, GitLab, Slack, OpenAI/Anthropic, Google API keys, Stripe, Vault, JWTs).
"""

from __future__ import annotations

import re

PLACEHOLDER = "[REDACTED]"
KEY_PLACEHOLDER = "[REDACTED PRIVATE KEY]"

# Words that make a key sensitive. `pwd` is matched only as a suffix (MYSQL_PWD) or as ODBC's PWD=
# with a non-path value, so the shell's PWD=/home/x survives.
_SECRET_WORDS = (
    r"passwd|password|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    r"|client[_-]?secret|auth[_-]?key|credentials?|session[_-]?key|signature|sas[_-]?token"
    r"|authorization"
)
_KEY = rf"[A-Za-z0-9_.\-]*(?:{_SECRET_WORDS})[A-Za-z0-9_.\-]*|[A-Za-z0-9_.\-]*[_\-]pwd|pwd|PWD"

# Values that describe a state rather than hold a secret ("token: expired").
_NOT_SECRETS = {
    "expired", "invalid", "missing", "required", "none", "null", "nil", "not", "empty",
    "undefined", "true", "false", "unknown", "denied", "incorrect", "wrong", "mismatch",
    "rejected", "revoked", "unset", "set", "provided", "redacted", "***", "hidden", "masked",
}  # fmt: skip

_PEM = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----.*?"
    r"(?:-----END \1-----|\Z)",
    re.DOTALL,
)
_HEADER = re.compile(
    r"(?im)^(?P<pre>[ \t>*-]*[\"']?(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?)"
    r"(?P<scheme>(?:bearer|basic|token|digest|negotiate|apikey|aws4-hmac-sha256)[ \t]+)?"
    r"(?P<val>[^\r\n\"']+)"
)
_INLINE_AUTH = re.compile(
    r"(?i)(?P<pre>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
    r"(?:bearer|basic|token|digest|negotiate)\s+)(?P<val>[^\s\"',;]+)"
)
_COOKIE = re.compile(r"(?im)^(?P<pre>[ \t>*-]*(?:set-)?cookie[ \t]*:[ \t]*)(?P<val>[^\r\n]+)")
_BEARER = re.compile(r"(?i)\b(?P<pre>bearer\s+)(?P<val>[A-Za-z0-9\-._~+/]{8,}=*)")
_URL_CREDS = re.compile(
    r"(?i)\b(?P<pre>[a-z][a-z0-9+.\-]*://[^\s:/@\[\]]*:)(?P<val>[^\s@/]+)(?P<post>@)"
)
_URL_TOKEN_USER = re.compile(
    r"(?i)\b(?P<pre>[a-z][a-z0-9+.\-]*://)"
    r"(?P<val>(?:gh[pousr]_|github_pat_|glpat-|x-access-token:)[^\s@/]+)(?P<post>@)"
)
_QUOTED_KV = re.compile(
    rf"(?P<pre>[\"'](?:{_KEY})[\"']\s*[:=]\s*)(?P<q>[\"'])(?P<val>(?:\\.|(?!(?P=q)).)*)(?P=q)",
    re.IGNORECASE,
)
_KV = re.compile(
    rf"(?<![A-Za-z0-9_.\-])(?P<pre>(?:{_KEY})\s*(?P<sep>=|:)\s*)"
    rf"(?P<val>\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s,;&\"'<>)\]}}]+)",
    re.IGNORECASE,
)
_FLAG = re.compile(
    rf"(?P<pre>(?<!\S)--?(?:{_SECRET_WORDS})[A-Za-z0-9_\-]*[ \t]+)"
    r"(?P<val>\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s\"'-][^\s\"']*)",
    re.IGNORECASE,
)
_CURL_USER = re.compile(r"(?P<pre>(?<!\S)(?:-u|--user)[ \t]+[\"']?[^\s:\"']+:)(?P<val>[^\s\"']+)")
_SQL_PASSWORD = re.compile(
    r"(?i)(?P<pre>\b(?:identified\s+by|password)\s+)(?P<val>'[^'\r\n]*'|\"[^\"\r\n]*\")"
)
_NETRC = re.compile(r"(?i)(?P<pre>\blogin\s+\S+\s+password\s+)(?P<val>\S+)")

# Token shapes that are secret wherever they appear.
_AUTH_SCHEMES = {"bearer", "basic", "token", "digest", "negotiate", "apikey", "aws4-hmac-sha256"}

_TOKENS = re.compile(
    r"\b(?:"
    r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}"  # AWS key ids
    r"|gh[pousr]_[A-Za-z0-9]{30,255}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{40,255}"
    r"|glpat-[A-Za-z0-9_\-]{20,}"  # GitLab
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|sk-(?:ant-|proj-|live-)?[A-Za-z0-9_\-]{20,}"  # OpenAI / Anthropic style
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|AIza[0-9A-Za-z_\-]{35}"  # Google API key
    r"|hv[sb]\.[A-Za-z0-9_\-]{20,}"  # HashiCorp Vault
    r"|npm_[A-Za-z0-9]{36}"
    r"|pypi-[A-Za-z0-9_\-]{50,}"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWT
    r")"
)
_SLACK_WEBHOOK = re.compile(
    r"(?P<pre>https://hooks\.slack\.com/services/)(?P<val>[A-Za-z0-9/_\-]+)", re.IGNORECASE
)


def _is_placeholder(value: str) -> bool:
    v = value.strip("\"'")
    if not v:
        return True
    if v.startswith("[REDACTED") or set(v) <= {"*", "x", "X", "•"}:
        return True
    return bool(
        re.fullmatch(r"<[^<>]*>|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\{\{.*\}\}|%\([a-z_]+\)s", v)
    )


def _masked(value: str) -> str:
    """The placeholder, inside the value's quotes when it had some."""
    if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
        return value[0] + PLACEHOLDER + value[0]
    return PLACEHOLDER


def _sub_val(match: re.Match[str]) -> str:
    groups = match.groupdict()
    if _is_placeholder(groups["val"]):
        return match.group(0)
    return groups["pre"] + _masked(groups["val"]) + (groups.get("post") or "")


def _sub_flag(match: re.Match[str]) -> str:
    flag = match.group("pre").split()[0].lower()
    if flag.endswith(("-file", "-path", "-stdin", "-env", "-id")):
        return match.group(0)  # names where the secret is, not the secret itself
    return _sub_val(match)


def _sub_header(match: re.Match[str]) -> str:
    if _is_placeholder(match.group("val")):
        return match.group(0)
    return match.group("pre") + (match.group("scheme") or "") + PLACEHOLDER


def _sub_quoted(match: re.Match[str]) -> str:
    if _is_placeholder(match.group("val")):
        return match.group(0)
    q = match.group("q")
    return f"{match.group('pre')}{q}{PLACEHOLDER}{q}"


def _sub_kv(match: re.Match[str]) -> str:
    pre, val = match.group("pre"), match.group("val")
    key = pre.split(match.group("sep"))[0].strip()
    bare = val.strip("\"'")
    if _is_placeholder(val):
        return match.group(0)
    if key.lower() == "pwd" and bare.startswith(("/", "~", ".")):
        return match.group(0)  # the shell's working directory, not a password
    if bare.startswith(("./", "../", "~/")) or re.fullmatch(r"(/[\w.\-]+){2,}/?", bare):
        return match.group(0)  # a path to where the secret is kept
    if key.lower().endswith(("error", "exception", "warning")):
        return match.group(0)  # NoCredentialsError: ... is a message, not a pair
    if bare.lower() in _AUTH_SCHEMES:
        return match.group(0)  # "Authorization: Bearer ..." is handled by the header rules
    if match.group("sep") == ":" and bare.lower() in _NOT_SECRETS:
        return match.group(0)
    if "token" in key.lower() and bare.isdigit() and len(bare) <= 6:
        return match.group(0)  # max_tokens=512 is a count, not a secret
    return pre + _masked(val)


def redact(text: str | None) -> str | None:
    """Return `text` with secrets replaced by [REDACTED]; None stays None."""
    if not text:
        return text
    out = _PEM.sub(KEY_PLACEHOLDER, text)
    out = _HEADER.sub(_sub_header, out)
    out = _INLINE_AUTH.sub(_sub_val, out)
    out = _COOKIE.sub(_sub_val, out)
    out = _BEARER.sub(_sub_val, out)
    out = _SLACK_WEBHOOK.sub(_sub_val, out)
    out = _URL_TOKEN_USER.sub(_sub_val, out)
    out = _URL_CREDS.sub(_sub_val, out)
    out = _QUOTED_KV.sub(_sub_quoted, out)
    out = _KV.sub(_sub_kv, out)
    out = _FLAG.sub(_sub_flag, out)
    out = _SQL_PASSWORD.sub(_sub_val, out)
    out = _CURL_USER.sub(_sub_val, out)
    out = _NETRC.sub(_sub_val, out)
    out = _TOKENS.sub(PLACEHOLDER, out)
    return out


def redact_mapping(values: dict[str, str | None], keys: tuple[str, ...]) -> dict[str, str | None]:
    """A copy of `values` with `redact` applied to the given keys."""
    return {k: (redact(v) if k in keys else v) for k, v in values.items()}
