"""Secrets given to a command on its command line or its standard input, where no key names
them: `sshpass -p`, `ipmitool -P`, `mysql -ppw`, `docker login -p`, `ldapsearch -w`,
`ipa-server-install -p … -a …`, `echo pw | kinit`, here-strings and here-documents fed to a
password prompt, `echo pw > ~/.vault_pass`, `ansible-vault encrypt_string 'pw'`,
`htpasswd -b file user pw`, `redis-cli -a`, `nmcli … password pw`, `openssl … pass:pw`,
`--from-literal=k=pw`, `virsh secret-set-value --base64`, kickstart `rootpw`."""

from __future__ import annotations

import re
from collections.abc import Iterator

from core.redaction.engine import Run, mask_value, sub_on_lines
from core.redaction.policy import PLACEHOLDER, is_placeholder, masked

_VALUE = r"(?P<val>\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s\"'|;&<>][^\s\"'|;&<>]*)"
_ATTACHED = r"(?P<val>\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s\"'|;&<>]+)"

# (words that must be in the text, trigger on the line, the option that carries the secret).
# The trigger keeps each option to its own tool: `-p` is a port for ssh, a password for sshpass.
_LINE_RULES: list[tuple[tuple[str, ...], re.Pattern[str], re.Pattern[str]]] = [
    (("sshpass",), re.compile(r"\bsshpass\b"),
     re.compile(rf"\bsshpass(?:[ \t]+-(?:[fdP][ \t]*\S+|[evh]))*[ \t]+-p[ \t]*{_ATTACHED}")),
    (("ipmitool",), re.compile(r"\bipmitool\b"),
     re.compile(rf"(?<!\S)-P[ \t]*{_ATTACHED}")),
    (("mysql", "mariadb"), re.compile(r"\b(?:mysql\w*|mariadb[\w-]*)\b"),
     re.compile(rf"(?<!\S)-p{_ATTACHED}")),
    (("login",),
     re.compile(r"\b(?:docker|podman|buildah|skopeo|nerdctl|helm|oras|crane|regctl|oc"
                r"|kubectl|az|cosign|apptainer|singularity|odo|tkn)\b.*\blogin\b"),
     re.compile(rf"(?<!\S)-p(?:[ \t]+|=){_VALUE}")),
    (("ldap",),
     re.compile(r"\bldap(?:search|modify|add|delete|passwd|whoami|compare|modrdn|exop|url)\b"),
     re.compile(rf"(?<!\S)-w[ \t]*{_ATTACHED}")),
    (("ldappasswd",), re.compile(r"\bldappasswd\b"),
     re.compile(rf"(?<!\S)-[as][ \t]*{_ATTACHED}")),
    (("ipa-",), re.compile(r"\bipa-[\w-]*install\b"),
     re.compile(rf"(?<!\S)-[paw][ \t]+{_VALUE}")),
    (("redis-cli",), re.compile(r"\bredis-cli\b"),
     re.compile(rf"(?<!\S)-a[ \t]+{_VALUE}")),
    (("nmcli",), re.compile(r"\bnmcli\b"),
     re.compile(r"(?<!\S)(?:password|[\w-]*\.(?:psk|password|wep-key[0-3]|pin|secrets"
                rf"|private-key-password))[ \t]+{_VALUE}")),
    (("secret-set-value",), re.compile(r"\bsecret-set-value\b"),
     re.compile(rf"(?<!\S)--base64[ \t]+{_VALUE}")),
    (("pass:",), re.compile(r"\bpass:"),
     re.compile(r"(?<!\S)-(?:pass(?:in|out|word)?|k)[ \t]+\"?pass:(?P<val>[^\s\"']+)")),
    (("--from-literal",), re.compile(r"--from-literal"),
     re.compile(r"--from-literal[= ][\"']?[\w.\-]+=(?P<val>[^\s\"']+)")),
    (("rootpw",), re.compile(r"^\s*rootpw\b", re.MULTILINE),
     re.compile(rf"(?m)^\s*rootpw(?:[ \t]+--[\w-]+)*[ \t]+{_VALUE}")),
]  # fmt: skip

# Network devices: Cisco IOS/NX-OS, VyOS, Junos: (words, trigger, rule).
_CONFIG_PROMPT = r"(?:\S+\(config[^)]*\)#[ \t]*)?"
_DEVICE_RULES = [
    (("enable",), r"(?i)\benable[ \t]+(?:secret|password)",
     rf"(?im)^[^\S\n]*{_CONFIG_PROMPT}enable[ \t]+(?:secret|password)"
     rf"(?:[ \t]+level[ \t]+\d+)?(?:[ \t]+[0-9])?[ \t]+{_VALUE}"),
    (("username",), r"(?i)\busername\b",
     rf"(?im)^[^\S\n]*{_CONFIG_PROMPT}username[ \t]+\S+(?:[ \t]+privilege[ \t]+\d+)?"
     rf"[ \t]+(?:secret|password)(?:[ \t]+[0-9])?[ \t]+{_VALUE}"),
    (("snmp-server",), r"(?i)snmp-server",
     rf"(?im)^[^\S\n]*snmp-server[ \t]+community[ \t]+{_VALUE}"),
    (("tacacs-server", "radius-server"), r"(?i)(?:tacacs|radius)-server",
     r"(?im)^[^\S\n]*(?:tacacs-server|radius-server)(?:[ \t]+host[ \t]+\S+)?"
     rf"(?:[ \t]+\S+)*?[ \t]+key(?:[ \t]+[0-9])?[ \t]+{_VALUE}"),
    (("key",), r"(?i)key-string|\bkey[ \t]+[07][ \t]",
     rf"(?im)^[^\S\n]*(?:key-string|key[ \t]+[07])(?:[ \t]+[0-9])?[ \t]+{_VALUE}"),
    (("isakmp",), r"(?i)isakmp",
     rf"(?im)^[^\S\n]*crypto[ \t]+isakmp[ \t]+key(?:[ \t]+[0-9])?[ \t]+{_VALUE}"),
    (("ospf",), r"(?i)\bospf\b",
     r"(?im)^[^\S\n]*ip[ \t]+ospf[ \t]+(?:authentication-key|message-digest-key"
     rf"[ \t]+\d+[ \t]+md5)(?:[ \t]+[0-9])?[ \t]+{_VALUE}"),
    (("wpa-psk",), r"(?i)wpa-psk",
     rf"(?im)^[^\S\n]*wpa-psk[ \t]+(?:ascii|hex)(?:[ \t]+[0-9])?[ \t]+{_VALUE}"),
    (("set ", "set\t"), r"(?m)^[ \t]*set[ \t]",
     r"(?m)^[^\S\n]*set[ \t]+(?:system|service|vpn|interfaces|protocols|"
     r"high-availability|nat|firewall|policy|container|pki|qos|load-balancing|vrf|"
     r"security|snmp)\b[^\n]*?[ \t](?:plaintext-password|encrypted-password|"
     r"pre-shared-secret|password|secret|private-key|community|shared-secret|"
     rf"authentication-key|psk|preshared-key|key-string)[ \t]+{_VALUE}"),
    (("encrypted-password", "plain-text-password", "secret \"", "authentication-key",
      "ascii-text"),
     r"encrypted-password|plain-text-password-value|\bsecret[ \t]+\"|authentication-key"
     r"|ascii-text",
     r"(?m)^[^\S\n]*(?:encrypted-password|plain-text-password-value|secret|"
     r"authentication-key|pre-shared-key[ \t]+ascii-text)[ \t]+"
     r"(?P<val>\"[^\"\r\n]+\")[ \t]*;"),
]  # fmt: skip
_DEVICE = [(words, re.compile(trigger), re.compile(rule)) for words, trigger, rule in _DEVICE_RULES]

# Commands that read a password from standard input.
_STDIN_READERS = re.compile(
    r"\b(?:kinit|passwd|chpasswd|cryptsetup|ldappasswd|vault[ \t]+login|ipa|smbpasswd"
    r"|pdbedit|htpasswd[ \t]+-\w*i|sudo[ \t]+(?:-\w+[ \t]+)*-S|sudo[ \t]+-\w*S)\b"
    r"|--password-stdin|--stdin\b|-passin[ \t]+stdin|/dev/stdin"
)
_ECHO_PIPE = re.compile(
    r"(?<![\w-])(?:echo(?:[ \t]+-[neE]+)*|printf(?:[ \t]+(?:'[^']*%[^']*'|\"[^\"]*%[^\"]*\"))?)"
    rf"[ \t]+{_VALUE}[ \t]*\|(?P<cmd>[^\n]*)"
)
_ECHO_FILE = re.compile(
    r"(?<![\w-])(?:echo(?:[ \t]+-[neE]+)*|printf(?:[ \t]+(?:'[^']*%[^']*'|\"[^\"]*%[^\"]*\"))?)"
    rf"[ \t]+{_VALUE}[ \t]*(?:>>?|\|[ \t]*(?:sudo[ \t]+)?tee(?:[ \t]+-a)?)[ \t]*(?P<file>\S+)"
)
_PIPE_OR_FILE = re.compile(r"\b(?:echo|printf)\b")
_SECRET_FILE = re.compile(r"(?i)pass|pw|secret|token|key|cred|vault|auth")
_HERE_STRING = re.compile(rf"<<<[ \t]*{_VALUE}")
_HEREDOC = re.compile(r"<<-?[ \t]*(?P<q>[\"']?)(?P<tag>[A-Za-z_]\w*)(?P=q)")


def _shell_words(line: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, text) of each shell word of `line`, quotes included in the span."""
    for m in re.finditer(r"\"[^\"]*\"|'[^']*'|[^\s\"']+(?:\"[^\"]*\"|'[^']*'|[^\s\"']+)*", line):
        yield m.start(), m.end(), m.group(0)


def _positional_secret(
    line: str, command: str, with_arg: set[str], pick: int
) -> list[tuple[int, int]]:
    """Spans of the `pick`-th positional word after `command` (options skipped)."""
    found = re.search(rf"(?<![\w-]){re.escape(command)}(?![\w-])", line)
    if found is None:
        return []
    positional: list[tuple[int, int, str]] = []
    skip = False
    for start, end, word in _shell_words(line[found.end() :]):
        if word in ("|", "&&", ";", ">", ">>") or word.startswith(("|", ";", "&", ">")):
            break
        if skip:
            skip = False
            continue
        if word.startswith("-") and len(word) > 1:
            skip = word.split("=")[0] in with_arg and "=" not in word
            continue
        positional.append((found.end() + start, found.end() + end, word))
    if len(positional) > pick:
        start, end, _ = positional[pick]
        return [(start, end)]
    return []


def _encrypt_string(line: str) -> list[tuple[int, int]]:
    options = {"--vault-id", "--vault-password-file", "--vault-pass-file", "--new-vault-id",
               "--new-vault-password-file", "--encrypt-vault-id", "-n", "--name",
               "--stdin-name", "--output", "-J"}  # fmt: skip
    return _positional_secret(line, "encrypt_string", options, 0)


def _htpasswd(line: str) -> list[tuple[int, int]]:
    found = re.search(r"\bhtpasswd((?:[ \t]+-\w+)+)", line)
    if found is None or "b" not in found.group(1):
        return []
    pick = 1 if "n" in found.group(1) else 2  # -nb user pw | -b file user pw
    return _positional_secret(line, "htpasswd", {"-C", "-r"}, pick)


def _mask_spans(line: str, spans: list[tuple[int, int]], run: Run) -> str:
    for start, end in sorted(spans, reverse=True):
        if not is_placeholder(line[start:end]):
            line = line[:start] + masked(line[start:end]) + line[end:]
            run.count += 1
    return line


def _sub_echo_pipe(m: re.Match[str]) -> str:
    if not _STDIN_READERS.search(m.group("cmd")):
        return m.group(0)
    value = m.group("val")
    if re.search(r"\bchpasswd\b", m.group("cmd")) and ":" in value:
        user, _, pw = value.strip("\"'").partition(":")
        if is_placeholder(pw):
            return m.group(0)
        q = value[0] if value[0] in "\"'" else ""
        start, end = m.span("val")
        whole = m.group(0)
        return whole[: start - m.start()] + f"{q}{user}:{PLACEHOLDER}{q}" + whole[end - m.start() :]
    return mask_value(m)


def _sub_echo_file(m: re.Match[str]) -> str:
    name = m.group("file").rsplit("/", 1)[-1]
    return mask_value(m) if _SECRET_FILE.search(name) else m.group(0)


def _heredocs(text: str, run: Run) -> str:
    """The body of a here-document fed to a password reader (`--password-stdin <<EOF`)."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        m = _HEREDOC.search(line)
        i += 1
        if m is None or not _STDIN_READERS.search(line):
            continue
        tag = m.group("tag")
        while i < len(lines) and lines[i].strip() != tag:
            body = lines[i]
            if body.strip() and not is_placeholder(body.strip()):
                indent = body[: len(body) - len(body.lstrip())]
                out.append(indent + PLACEHOLDER)
                run.count += 1
            else:
                out.append(body)
            i += 1
    return "\n".join(out)


def redact_commands(text: str, run: Run) -> str:
    """Command lines and standard input that carry a secret."""
    low = text.lower()
    for words, trigger, rule in _LINE_RULES:
        if any(word in low for word in words):
            text = sub_on_lines(run, text, trigger, rule, mask_value, continued=True)
    for words, trigger, rule in _DEVICE:
        if any(word in low for word in words):
            text = sub_on_lines(run, text, trigger, rule, mask_value)
    if "echo" in low or "printf" in low:
        text = sub_on_lines(run, text, _PIPE_OR_FILE, _ECHO_PIPE, _sub_echo_pipe)
        text = sub_on_lines(run, text, _PIPE_OR_FILE, _ECHO_FILE, _sub_echo_file)
    if "<<<" in text:
        text = sub_on_lines(run, text, _STDIN_READERS, _HERE_STRING, mask_value, continued=True)
    if "<<" in text:
        text = _heredocs(text, run)
    if "encrypt_string" in text or "htpasswd" in text:
        lines = text.split("\n")
        for n, line in enumerate(lines):
            spans = []
            if "encrypt_string" in line:
                spans += _encrypt_string(line)
            if "htpasswd" in line:
                spans += _htpasswd(line)
            if spans:
                lines[n] = _mask_spans(line, spans, run)
        text = "\n".join(lines)
    return text
