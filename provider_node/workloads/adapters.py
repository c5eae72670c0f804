"""LoRA adapters (peft) over one loaded base model, switched per sub-batch.

An adapter is a peft adapter directory (``adapter_config.json`` and ``adapter_model.safetensors``,
as a fine-tune's ``final/`` holds): safetensors only, so a provider never unpickles a submitter's
file. Every adapter is loaded into the one base model under a name of its own; lines run in
sub-batches of one adapter each (:meth:`AdapterSet.use`), and lines without one run with the
adapters disabled. An adapter that does not fit the base (other modules, other shapes) or whose
files are malformed is an :class:`AdapterError`: final, the same on any provider.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gpumesh.errors import WorkloadError

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_PICKLES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")


class AdapterError(WorkloadError):
    """An adapter cannot be applied to this base model (a property of the adapter: final)."""

    def __init__(self, cid: str, why: str) -> None:
        super().__init__(f"adapter {cid}: {why}", field="adapter", retryable=False)
        self.cid = cid


def read_adapter_config(path: Path, cid: str = "") -> dict[str, Any]:
    """The adapter's peft config, after checking the directory holds a LoRA adapter in safetensors."""
    path = Path(path)
    cid = cid or path.name
    if any((path / name).exists() for name in _PICKLES):
        raise AdapterError(cid, "pickled weights are not accepted; save it with safe_serialization=True")
    if not (path / WEIGHTS).is_file():
        raise AdapterError(cid, f"no {WEIGHTS}")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise AdapterError(cid, f"{CONFIG} is missing or not JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise AdapterError(cid, f"{CONFIG} is not a LoRA adapter (peft_type {config.get('peft_type')!r})"
                           if isinstance(config, dict) else f"{CONFIG} is not an object")
    return config


def _stripped(key: str, name: str) -> str:
    """A loaded adapter's state-dict key as peft saves it (without the adapter's name)."""
    return re.sub(rf"\.{re.escape(name)}(?=\.|$)", "", key)


class AdapterSet:
    """``model`` is the base model, wrapped by peft once an adapter is loaded."""

    def __init__(self, model: Any, paths: Mapping[str, Path] | None = None) -> None:
        self.model = model
        self.names: dict[str, str] = {}  # adapter CID -> its name in the model
        for cid, path in sorted((paths or {}).items()):
            self.load(cid, Path(path))

    def load(self, cid: str, path: Path) -> None:
        from peft import PeftModel
        from safetensors import safe_open

        read_adapter_config(path, cid)
        name = f"gm_adapter_{len(self.names)}"
        try:
            with safe_open(str(path / WEIGHTS), framework="pt") as f:
                saved = set(f.keys())
        except Exception as exc:  # noqa: BLE001 -- any parse failure is the file's
            raise AdapterError(cid, f"{WEIGHTS} is not a valid safetensors file ({exc})") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # missing/unexpected keys are checked below, exactly
                if not self.names:
                    self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name,
                                                           is_trainable=False)
                else:
                    self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        except (ValueError, RuntimeError, KeyError, TypeError, OSError) as exc:
            raise AdapterError(cid, f"does not fit this base model ({str(exc).splitlines()[0][:300]})") from None
        loaded = {_stripped(k, name) for k in self.model.state_dict() if f".{name}." in k or k.endswith(f".{name}")}
        # peft saves keys without the adapter name: every saved tensor must have been loaded, and
        # every tensor of the adapter in the model must come from the file (none left at its init)
        if not saved or saved != loaded:
            extra = sorted(saved - loaded)[:2] or sorted(loaded - saved)[:2]
            raise AdapterError(cid, f"its tensors do not match this base model's modules (e.g. {extra})")
        self.model.eval()
        self.names[cid] = name

    @contextlib.contextmanager
    def use(self, cid: str | None) -> Iterator[None]:
        """Run the block with adapter ``cid`` active (None: the base model alone)."""
        if cid is None:
            if not self.names:
                yield
                return
            with self.model.disable_adapter():
                yield
            return
        if cid not in self.names:
            raise AdapterError(cid, "the line names an adapter this task was not given")
        self.model.set_adapter(self.names[cid])
        yield


def parse_adapters_arg(value: str | None) -> dict[str, Path]:
    """``--adapters`` of a workload: a JSON object of adapter CID to directory."""
    if not value:
        return {}
    try:
        obj = json.loads(value)
    except ValueError as exc:
        raise WorkloadError(f"--adapters is not JSON: {exc}", field="params") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
        raise WorkloadError("--adapters must map adapter CIDs to paths", field="params")
    return {k: Path(v) for k, v in obj.items()}

