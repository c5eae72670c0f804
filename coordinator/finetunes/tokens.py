"""Token counts of chat examples at the coordinator, with the base model's own tokenizer and chat
template (so a line over the model's context is refused before any compute is bought).

Only the tokenizer's files are read out of a model tar (no weights are loaded); a GGUF model is
read by transformers' GGUF loader (its vocabulary and metadata). Loaded tokenizers are cached by
model CID.
"""

from __future__ import annotations

import functools
import json
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gpumesh.artifacts import ArtifactStore

TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "generation_config.json"}
MAX_TOKENIZER_BYTES = 64 << 20


@dataclass(frozen=True)
class ModelText:
    tokenizer: Any
    context: int  # the model's context length in tokens (0: unknown)


class TokenizerCache:
    def __init__(self, artifacts: ArtifactStore, *, size: int = 4) -> None:
        self.artifacts = artifacts
        self._lock = threading.Lock()
        self.get = functools.lru_cache(maxsize=size)(self._load)

    def _load(self, cid: str) -> ModelText:
        with self._lock, tempfile.TemporaryDirectory(prefix="gpumesh-tokenizer-") as tmp:
            path = Path(tmp) / "model"
            self.artifacts.get_file(cid, path)
            with path.open("rb") as f:
                gguf = f.read(4) == b"GGUF"
            return _load_gguf(path) if gguf else _load_tar(path, Path(tmp) / "dir")


def _load_tar(path: Path, out: Path) -> ModelText:
    from transformers import AutoTokenizer

    out.mkdir()
    with tarfile.open(path, mode="r:") as tar:
        for m in tar.getmembers():
            name = PurePosixPath(m.name).as_posix().removeprefix("./")
            if m.isfile() and name in TOKENIZER_FILES and m.size <= MAX_TOKENIZER_BYTES:
                (out / name).write_bytes(tar.extractfile(m).read())
    if not (out / "config.json").is_file():
        raise ValueError("the model tar has no config.json")
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    config = json.loads((out / "config.json").read_text())
    return ModelText(tok, int(config.get("max_position_embeddings") or 0))


def _load_gguf(path: Path) -> ModelText:
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    try:
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
        context = int(getattr(config, "max_position_embeddings", 0) or 0)
    except Exception:  # noqa: BLE001 -- the context is a check of its own; unknown is allowed
        context = 0
    return ModelText(tok, context)
