"""What counts as a secret: which keys name one, and which values are not one after all.

A key is *strong* when its words say it holds a secret (password, token, api_key…): any literal
value is redacted. A key is *weak* when the word is also used for harmless things (signature,
auth, credentials, sig): the value is redacted only when it looks machine-made (`looks_opaque`).
A key that names *where* or *what kind of* secret (`password_file`, `token_type`, `secretName`,
`secret_key_ref`) is no secret key at all.

Values that are never secrets, whatever the key (the policy is documented in
docs/troubleshooting.md, "What is redacted"): placeholders (`<password>`, `${VAR}`, `$(cmd)`,
`{{ var }}`, `your-api-key`, `YOUR_TOKEN`, `changeme`, `xxxx`, `***`, `hvs.CAES...`), states
(`expired`, `none`, `true`), code (`encrypt(value)`, `creds['password']`, a type annotation, a
variable passed as a keyword argument), paths and file names, small counts. Literal values, even
weak ones such as `admin` or `airflow`, are redacted: a weak password is still a password.
"""

from __future__ import annotations

import math
import re

PLACEHOLDER = "[REDACTED]"
KEY_PLACEHOLDER = "[REDACTED PRIVATE KEY]"

# Words that make a key (or a flag) hold a secret. `pass`, `pw` and `pwd` count only as a whole
# word of the key (ansible_ssh_pass, BIND_PW, MYSQL_PWD), so `bypass` and `compass` do not.
STRONG_WORDS = (
    r"passw(?:or)?d|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|auth[_-]?key|fernet[_-]?key|account[_-]?key|session[_-]?key"
    r"|encryption[_-]?key|signing[_-]?key|master[_-]?key|activation[_-]?key|key[_-]?data"
    r"|psk|community|sas[_-]?token|bindpw|rootpw|keystore[_-]?pass|truststore[_-]?pass"
    r"|pre[_-]?shared[_-]?(?:key|secret)|client[_-]?certificate[_-]?data"
)
_STRONG = re.compile(rf"(?i)(?:{STRONG_WORDS})|(?:^|[_\-.])(?:pass|pw|pwd)(?:$|[_\-.])|pwd$")
_WEAK = re.compile(r"(?i)signature|credentials?|^(?:auth|sig|x-amz-signature|cookie)$")

# A key's last word that says the value is about the secret, not the secret itself.
_REFERENCE_WORDS = frozenset(
    "type name names path paths file files dir ref url uri endpoint length len size count ttl "
    "timeout expiry expires expiration lifetime mode format version policy policies method "
    "provider backend env cmd command field enabled required store engine mount role header "
    "prefix kind source location label description regex pattern min max age manager rotation "
    "hint prompt used limit budget usage stdin exists key_ref keyref id_ref arn rotated changed "
    "reset updated created algorithm algo hash_algorithm strength policy_name vault_id".split()
)
_COUNT_PREFIXES = frozenset({"max", "min", "num", "total", "n", "count", "remaining"})

# Values that state a condition rather than hold a secret ("token: expired").
NOT_SECRETS = frozenset(
    "expired invalid missing required none null nil not empty undefined true false yes no on off "
    "unknown denied incorrect wrong mismatch rejected revoked unset set provided redacted hidden "
    "masked ok error failed failure success enabled disabled prompt stdin ask optional default "
    "changed accepted generated rotated bearer basic service batch periodic orphan "
    # prose after a flag or a colon ("--password via the CLI", "password: is wrong")
    "via is are was and or for the to in on with from of at by as be if when instead again "
    "option flag argument parameter field value here there this that".split()
)
# Words only (no digits or symbols after an optional token prefix such as `sk-`, `sha256~`)
# around a word that marks an example: `your-api-key`, `YOUR_TOKEN`, `sha256~CHANGEME`.
_PLACEHOLDER_WORDS = re.compile(
    r"(?i)(?:[a-z0-9]+[~_.\-])*?[a-z_.\- ]*(?:your|example|placeholder|change[-_]?me"
    r"|replace[-_]?(?:me|this)|redacted|dummy|fake|sample)[a-z_.\- ]*"
)
# A value that is only letters around a secret word names the secret: `rhelpassword`,
# `offlinetoken`, `pullsecret`, `adminpass`.
_SECRET_WORD_ONLY = re.compile(r"(?i)[a-z]*(?:pass(?:word|wd)?|secret|token|key|pwd)[a-z]*")
_MASK_RUN = re.compile(r"[xX]{4,}|\*{3,}|•{3,}")
_TEMPLATE = re.compile(
    r"<[^<>]*>|\$\{[^}]*\}?|\$\([^)]*\)?|\$[A-Za-z_][A-Za-z0-9_]*|\{\{.*?\}\}|\{%.*?%\}"
    r"|%\([A-Za-z_]+\)[sd]|%[A-Za-z_]+%|`[^`]*`|\{[A-Za-z_][\w.\[\]'\"]*\}"
)
_CRYPT_HASH = re.compile(
    r"\$(?:1|2[abxy]?|5|6|7|y|gy|apr1|sha1|md5|argon2\w*|scrypt|pbkdf2[\w-]*)\$[^\s$]+"
)
_KWARGS_SO_FAR = re.compile(r"[ \t]*(?:[\w.]+[ \t]*=[ \t]*[\w.'\"]+[ \t]*,[ \t]*)+")
_PYTHON_TYPES = frozenset(
    "str int bytes dict list bool float tuple set any none optional secretstr path object "
    "mapping sequence callable".split()
)
_FILE_NAME = re.compile(
    r"(?i)[\w.-]+\.(?:crt|cer|pem|key|p12|pfx|jks|json|ya?ml|txt|conf|cfg|ini|env|pw|pass|"
    r"keytab|asc|gpg|der|csr|pub|toml|secret|token)"
)
_SECRET_WORD_IN_VALUE = re.compile(r"(?i)pass(?:word|wd)?|secret|token|key|pwd|cred|pw\b")


def words(key: str) -> list[str]:
    """The words of a key: split on _ - . and camelCase (secretKeyRef -> secret, key, ref)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key.strip("-\"' "))
    return [w.lower() for w in re.split(r"[_\-.\s]+", spaced) if w]


def key_strength(key: str) -> str | None:
    """'strong', 'weak' or None for a key (a variable, a YAML/JSON key, a flag name)."""
    key = key.strip().strip("\"'").lstrip("-")
    if not key or not (_STRONG.search(key) or _WEAK.search(key)):
        return None
    parts = words(key)
    if not parts:
        return None
    if parts[-1] in _REFERENCE_WORDS or "_".join(parts[-2:]) in _REFERENCE_WORDS:
        return None  # password_file, token_type, secretName, secret_key_ref
    if parts[0] in _COUNT_PREFIXES and len(parts) > 1:
        return None  # max_tokens, num_tokens
    if key in ("NOPASSWD", "PASSWD"):
        return None  # sudoers tags
    if re.fullmatch(
        r"AIRFLOW__\w+__\w+(?:CONN|KEY|URL|BACKEND|PASSWORD|AUTH|SECRET|TOKEN)"
        r"_(?:CMD|SECRET)",
        key,
    ):
        return None  # Airflow's FERNET_KEY_CMD, SQL_ALCHEMY_CONN_SECRET: where the value is
    return "strong" if _STRONG.search(key) else "weak"


def _mixed(text: str) -> bool:
    """Upper, lower and digits together in 10+ characters: machine-made, not a name."""
    return len(text) >= 10 and all(re.search(p, text) for p in ("[a-z]", "[A-Z]", "[0-9]"))


def looks_opaque(value: str) -> bool:
    """Machine-made: no spaces, long, and not a word or a word-list (`airflow-webserver-tls`)."""
    v = value.strip("\"'")
    if len(v) < 12 or re.search(r"\s", v):
        return False
    if re.fullmatch(r"[A-Za-z]+(?:[-_.][A-Za-z]+)*", v):
        return False
    return bool(re.search(r"\d", v) and re.search(r"[A-Za-z]", v)) or len(v) >= 24


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    if not value:
        return 0.0
    counts: dict[str, int] = {}
    for ch in value:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def is_placeholder(value: str) -> bool:
    """A value that stands for a secret without being one (see the module docstring)."""
    v = value.strip().strip("\"'").strip()
    if not v or "[REDACTED" in v:
        return True
    if _CRYPT_HASH.match(v):
        return False  # $6$salt$hash, $apr1$…: a password hash, not a shell variable
    if set(v) <= set("*xX•.-_#?0 "):
        return True
    if v.startswith("!"):
        return True  # YAML tag: `!vault |` (ansible-vault ciphertext follows)
    if v.startswith(("os.environ/", "env:", "file:", "vault:", "secret:", "ref+", "hmac-sha256:")):
        return True  # LiteLLM / sops / Vault references, Vault audit-log HMACs
    if len(v) <= 64 and (_PLACEHOLDER_WORDS.fullmatch(v) or _SECRET_WORD_ONLY.fullmatch(v)):
        return True
    masks = sum(len(run) for run in _MASK_RUN.findall(v))
    if masks >= 4 and masks >= 0.4 * len(v):
        return True  # AKIAXXXXXXXXXXXXXXXX, ab****cd
    head = v.rstrip(".…")
    if head != v and v.endswith(("...", "…")) and _elided(head):
        return True  # an elided example: `hvs.CAESIJ...`, `sk-or-...`
    rest = _TEMPLATE.sub("", v)
    if rest != v and (not rest.strip(" \"'") or re.fullmatch(r"[\w./:@-]*/[\w./:@-]*", rest)):
        return True  # `${VAR}`, `{{ vault_pw }}`, `$(cat ~/.token)`, `prefix/{env}`
    if re.fullmatch(r"[A-Z][A-Z0-9]*(?:[_-][A-Z0-9]+)*", v) and _SECRET_WORD_IN_VALUE.search(v):
        return True  # MACHINE_PASSWORD, GITLAB-TOKEN
    if re.fullmatch(r"[a-z][a-z0-9]*(?:[_-][a-z0-9]+)+", v) and _SECRET_WORD_IN_VALUE.search(v):
        return True  # vault_admin_password, hetzner-admin-pass: names, not values
    return False


def _elided(head: str) -> bool:
    """The visible start of an example value cut short with "..." (not a whole password)."""
    classes = sum(bool(re.search(p, head)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
    return len(head) <= 12 and bool(re.fullmatch(r"[\w.:\-]*", head)) and classes < 3


def is_path(value: str) -> bool:
    """A path or file name: where a secret is kept, not the secret."""
    v = value.strip("\"'")
    if v.startswith(("./", "../", "~/", "/dev/", "/run/", "/etc/", "/var/", "/home/", "/root/")):
        return True
    if re.fullmatch(r"(?:/[\w.@+-]+){2,}/?", v):
        return not any(_mixed(part) for part in v.split("/"))  # base64 can start with "/"
    return bool(_FILE_NAME.fullmatch(v)) and not re.search(r"\d{4,}", v)


def is_code(value: str, before: str, after: str, sep: str) -> bool:
    """`value` is an expression in source code rather than a literal.

    `before` is the line up to the key, `after` the text right after the value."""
    v = value.strip()
    if after[:1] in ("(", "[") or v.endswith(("(", "[")) or re.match(r"[A-Za-z_][\w.]*\(", v):
        return True  # encrypt(value), creds['password'], os.environ.get(...)
    if v[:2] in ('f"', "f'", 'b"', "b'", 'r"', "r'") and "{" in v:
        return True
    ident = re.fullmatch(r"[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*", v)
    if sep == ":" and v.lower().rstrip("]").split("[")[0] in _PYTHON_TYPES:
        return True  # a type annotation: `credential_type: str`
    if (
        ident
        and after[:1] in (",", ")", "", "\n", "\r")
        and (before.count("(") > before.count(")") or _KWARGS_SO_FAR.fullmatch(before))
    ):
        return True  # a variable passed on: hvac.Client(url=addr, token=vault_token)
    if (
        ident
        and "." in v
        and v.split(".")[0]
        in ("self", "conn", "config", "settings", "os", "args", "cls", "ctx", "env", "request")
    ):
        return True  # conn.password, self.token
    return False


def is_not_secret_value(key: str, value: str, *, sep: str = "=", before: str = "",
                        after: str = "") -> bool:  # fmt: skip
    """True when `value` (given for a secret-sounding `key`) must be kept as it is."""
    bare = value.strip().strip("\"'")
    if is_placeholder(value) or is_path(value):
        return True
    if bare.lower() in NOT_SECRETS:
        return True
    if is_code(value, before, after, sep):
        return True
    if bare.isdigit() and (len(bare) <= 3 or ("token" in key.lower() and len(bare) <= 6)):
        return True  # max_tokens=512, critical_secret: 5
    if re.fullmatch(r"[\w.-]+(?:Error|Exception|Warning)", key):
        return True  # NoCredentialsError: ... is a message
    return False


def pair_is_secret(key: str, value: str, **context: str) -> bool:
    """Whether `key` = `value` holds a secret that must be redacted."""
    strength = key_strength(key)
    if strength is None or is_not_secret_value(key, value, **context):
        return False
    return strength == "strong" or looks_opaque(value)


def masked(value: str) -> str:
    """The placeholder, inside the value's own quotes when it had some."""
    if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
        return value[0] + PLACEHOLDER + value[0]
    return PLACEHOLDER
