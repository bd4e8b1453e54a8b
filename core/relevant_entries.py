"""Which stored documents a probe's `relevant` entry names.

Operators name documents the way they know them: the full source key, a path relative to the
folder they ingested, a bare filename, a glob (`adrs/adr-004*.md`) or a folder (`vault-setup/`,
with its trailing slash: every document under it). `qwb eval` and the bootstrap health probes
share these rules.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

GLOB_CHARS = "*?["


def normalise_entry(entry: str) -> str:
    entry = entry.strip().replace("\\", "/")
    while entry.startswith("./"):
        entry = entry[2:]
    return entry


def is_glob(entry: str) -> bool:
    return any(ch in entry for ch in GLOB_CHARS)


def is_folder(entry: str) -> bool:
    """`vault-setup/`: every document under that folder."""
    return entry.endswith("/") and entry.strip("/") != ""


def names_many(entry: str) -> bool:
    """A glob or a folder: it stands for every document it covers, never ambiguously."""
    return is_glob(entry) or is_folder(entry)


def source_matches(entry: str, key: str, *, substring: bool = False) -> bool:
    """Does a relevant entry name this source key?

    Exact key; a path suffix on a `/` boundary (a path relative to the ingest root, or a bare
    filename); a glob (* ? [ ]) against the key or any trailing part of it; a folder (trailing
    `/`): an absolute one holds the keys that start with it, a relative one any key with that
    folder in its path. `substring` (the health probes' `expect_source` contract) also accepts
    any substring of the key."""
    if entry == key:
        return True
    if is_glob(entry):
        return fnmatchcase(key, entry) or fnmatchcase(key, "*/" + entry.lstrip("/"))
    if is_folder(entry):
        under = key.startswith(entry) if entry.startswith("/") else ("/" + entry) in ("/" + key)
        if under:
            return True
    elif key.endswith("/" + entry.lstrip("/")):
        return True
    return substring and entry in key


@dataclass(frozen=True)
class Resolution:
    """The source keys a relevant entry stands for in this store."""

    entry: str
    keys: tuple[str, ...]
    ambiguous: bool = False


def _implied_root(key: str, entry: str) -> str | None:
    suffix = "/" + entry.lstrip("/")
    return key[: -len(suffix)] if key.endswith(suffix) else None


def resolve_relevant(
    entries: Iterable[str], keys: Sequence[str], root: str | None = None
) -> dict[str, Resolution]:
    """Map each relevant entry to the store's source keys.

    With `root`, a relative entry means exactly `root/entry`. Without it, a relative entry matches
    by path suffix; when that is ambiguous (README.md in several folders), the candidates under the
    ingest root implied by the file's unambiguous entries win; if that does not settle it, all
    candidates count and the resolution is marked ambiguous. Globs and folders match every key
    they cover."""
    entries = list(dict.fromkeys(entries))
    if root is not None:
        root = posixpath.normpath(str(root).replace("\\", "/"))
        key_set = set(keys)
        out = {}
        for e in entries:
            if is_glob(e):
                hits = [k for k in keys if fnmatchcase(k, posixpath.join(root, e)) or k == e]
            elif is_folder(e):
                folder = posixpath.normpath(posixpath.join(root, e)) + "/"
                hits = [k for k in keys if k.startswith(folder)]
            elif e in key_set:
                hits = [e]
            else:
                joined = posixpath.normpath(posixpath.join(root, e))
                hits = [joined] if joined in key_set else []
            out[e] = Resolution(e, tuple(hits))
        return out

    candidates = {e: [k for k in keys if source_matches(e, k)] for e in entries}
    votes: Counter[str] = Counter()
    for e, found in candidates.items():
        if len(found) == 1 and not names_many(e):
            implied = _implied_root(found[0], e)
            if implied is not None:
                votes[implied] += 1
    out = {}
    for e, found in candidates.items():
        if len(found) <= 1 or names_many(e):
            out[e] = Resolution(e, tuple(found))
            continue
        scored = [(votes.get(_implied_root(k, e) or "", 0), k) for k in found]
        best = max(score for score, _ in scored)
        chosen = [k for score, k in scored if score == best] if best > 0 else found
        out[e] = Resolution(e, tuple(chosen), ambiguous=len(chosen) > 1)
    return out


def folder_hint(entry: str, keys: Iterable[str]) -> str | None:
    """For an entry that matched nothing but names a folder of the store without the trailing
    slash (`vault-setup`), what to write instead."""
    name = entry.strip("/")
    if not name or names_many(entry):
        return None
    inside = "/" + name + "/"
    if any(inside in "/" + k for k in keys):
        return f"{name}/"
    return None
