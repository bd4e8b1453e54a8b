"""Secrets known by their shape wherever they appear: private key blocks, issued tokens
(GitHub, GitLab, Slack, OpenAI, AWS, GCP, Azure, Vault, JWT…), password hashes, and
machine-made values assigned to a variable whose name does not say "secret"."""

from __future__ import annotations

import base64
import binascii
import re

from core.redaction.engine import Run, mask_value
from core.redaction.policy import (
    KEY_PLACEHOLDER,
    PLACEHOLDER,
    entropy,
    is_placeholder,
    key_strength,
    words,
)

_PEM = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----.*?-----END \1-----", re.DOTALL
)
# A block cut short (a truncated paste): the BEGIN line and the base64 lines that follow it.
_PEM_CUT = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:(?:\\n|\r?\n)[ \t]*(?:[A-Za-z0-9+/=]{16,}|[A-Za-z-]+: [^\n\\]*|=?[A-Za-z0-9+/]{4}))+"
)
_PUTTY = re.compile(r"(?m)^(?P<pre>Private-Lines:[ \t]*(?P<n>\d+)[ \t]*\r?\n)")
_AGE = re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]{50,}")

_TOKENS = re.compile(  # not inside a longer word, but after `_`, `-` or `.`: `load_ghp_…`
    r"(?<![A-Za-z0-9])(?:"
    r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}"  # AWS key ids
    r"|gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{40,255}"  # GitHub
    r"|gl(?:pat|dt|rt|ptt|ft|cbt|imt|agent|oas|soat)-[A-Za-z0-9_\-]{20,}"  # GitLab
    r"|GR1348941[A-Za-z0-9_\-]{20,}"  # GitLab runner registration
    r"|xox[abposre]-[A-Za-z0-9\-]{10,}|xapp-[0-9]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|sk-(?:ant-|proj-|live-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"  # OpenAI / Anthropic
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|AIza[0-9A-Za-z_\-]{35}|ya29\.[0-9A-Za-z_\-]{20,}|GOCSPX-[0-9A-Za-z_\-]{20,}"  # Google
    r"|[0-9A-Za-z_~.]{3}8Q~[0-9A-Za-z_~.\-]{31,34}"  # Azure AD client secret
    r"|hv[sbr]\.[A-Za-z0-9_\-]{20,}"  # HashiCorp Vault
    r"|[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_\-]{60,}"  # Terraform Cloud
    r"|npm_[A-Za-z0-9]{36}|pypi-[A-Za-z0-9_\-]{50,}|hf_[A-Za-z0-9]{30,}"
    r"|dckr_pat_[A-Za-z0-9_\-]{20,}|glsa_[A-Za-z0-9_]{32,}|glc_[A-Za-z0-9+/=_]{32,}"
    r"|dapi[0-9a-f]{32}|NRAK-[A-Z0-9]{27}|SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{20,}"
    r"|sha256~[A-Za-z0-9_\-]{20,}"  # OpenShift OAuth tokens
    r"|AQ[A-Za-z0-9+/]{38}=="  # Ceph / libvirt secret keys
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWT
    r")"
)
_HASHES = (
    r"\$(?:1|5|6|md5|sha1|apr1)\$[^\s$:'\"]{1,64}\$[./A-Za-z0-9]{20,}"
    r"|\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}"
    r"|\$y\$[^\s$:]+\$[^\s$:]+\$[./A-Za-z0-9]{20,}"
    r"|\{(?:SHA|SSHA|SHA256|SSHA256|SHA512|SSHA512|MD5|SMD5|CRYPT|PBKDF2[\w-]*)\}[A-Za-z0-9+/=.$]{8,}"
)
_HASH = re.compile(rf"(?<![\w$])(?:{_HASHES})")
# user:hash lines (htpasswd, /etc/shadow) are caught by _HASH; .pgpass lines by shape.
_PGPASS = re.compile(
    r"(?m)^(?P<pre>(?=[^:\s]*[A-Za-z.*])[\w.*\-]+:(?:\d{1,5}|\*):[^:\s]+:[^:\s]+:)"
    r"(?P<val>[^\s]+)[ \t]*$"
)
_ASSIGNMENT = re.compile(
    r"(?<![\w.\-])(?P<key>[A-Za-z_][\w.\-]*)[\"']?[ \t]*(?:=|:)(?!//)[ \t]*(?P<q>[\"']?)"
    r"(?P<val>[A-Za-z0-9+/=_\-.~]{20,})(?P=q)(?![\w+/=\-.~])"
)
_ID_WORDS = frozenset(
    "sha sha1 sha256 sha512 md5 digest checksum hash etag commit revision rev uid uuid id ids "
    "guid fingerprint integrity version image ref build serial thumbprint kid trace span request "
    "correlation tag run job task dag path url uri name host file dir".split()
)


def _is_certificate(value: str) -> bool:
    """base64 of a PEM certificate or public key: public, not a secret."""
    if not value.startswith("LS0t"):
        return False
    try:
        head = base64.b64decode(value + "=" * (-len(value) % 4))[:64]
    except (binascii.Error, ValueError):
        return False
    return head.startswith(b"-----BEGIN") and b"PRIVATE" not in head


def looks_generated(value: str) -> bool:
    """A value a machine made: long, mixed classes, high entropy, not words, hex or a cert."""
    if len(value) < 20 or "://" in value:
        return False
    longest = max(value.split("/"), key=len)
    if len(longest) < 20:
        return False  # a path
    classes = sum(bool(re.search(p, longest)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
    if classes < 3:
        return False  # hex digests, UUIDs, words
    tokens = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", longest)
    if tokens and sum(map(len, tokens)) / len(tokens) >= 3.5:
        return False  # CentOSStream10Plugin: words, not noise
    if re.match(r"(?:sha\d+|md5)[-:]", value, re.IGNORECASE) or _is_certificate(value):
        return False
    return entropy(longest) >= 3.5 + min(len(longest), 64) / 64


def _sub_assignment(m: re.Match[str]) -> str:
    key = m.group("key")
    if key_strength(key) is not None:
        return m.group(0)  # a secret-named key: the pair rules decided already
    parts = words(key)
    if parts and (parts[-1] in _ID_WORDS or "public" in parts):
        return m.group(0)
    if not looks_generated(m.group("val")):
        return m.group(0)
    return mask_value(m)


def _sub_putty(run: Run, text: str) -> str:
    pieces: list[str] = []
    last = 0
    for m in _PUTTY.finditer(text):
        if m.start() < last:
            continue
        end = m.end()
        for _ in range(int(m.group("n"))):
            nl = text.find("\n", end)
            end = len(text) if nl < 0 else nl + 1
        if text.startswith(PLACEHOLDER, m.end()):
            continue  # redacted already
        pieces += [
            text[last : m.end()],
            PLACEHOLDER + ("\n" if text[end - 1 : end] == "\n" else ""),
        ]
        last = end
        run.count += 1
    pieces.append(text[last:])
    return "".join(pieces)


def redact_blocks(text: str, run: Run) -> str:
    """Private key blocks (PEM, OpenSSH, PGP, PuTTY, age), whole."""
    if "PRIVATE KEY" in text:
        text = run.sub(_PEM, lambda m: KEY_PLACEHOLDER, text)
        text = run.sub(_PEM_CUT, lambda m: KEY_PLACEHOLDER, text)
    if "Private-Lines:" in text:
        text = _sub_putty(run, text)
    if "AGE-SECRET-KEY-" in text:
        text = run.sub(_AGE, lambda m: KEY_PLACEHOLDER, text)
    return text


def redact_tokens(text: str, run: Run) -> str:
    """Issued tokens of a known shape, wherever they are."""
    return run.sub(_TOKENS, lambda m: m[0] if is_placeholder(m[0]) else PLACEHOLDER, text)


def redact_shapes(text: str, run: Run) -> str:
    """Issued tokens, password hashes, .pgpass lines and machine-made assigned values."""
    text = redact_tokens(text, run)
    if "$" in text or "{" in text:
        text = run.sub(_HASH, lambda m: PLACEHOLDER, text)
    if ":" in text:
        text = run.sub(_PGPASS, mask_value, text)
    return run.sub(_ASSIGNMENT, _sub_assignment, text)
