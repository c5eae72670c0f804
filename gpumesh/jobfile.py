"""Job files (YAML) for the CLI: local model/input paths are uploaded, CIDs pass through."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import yaml

from gpumesh.errors import InvalidArgument
from gpumesh.jobspec import JobSpec, validate_spec

# job-file key -> JobSpec field; the value is a path (relative to the file) or a CID
ARTIFACT_KEYS = {"model": "model_cid", "input": "input_cid"}


def load_job_file(path: Path, upload: Callable[[Path], str],
                  upload_sealed: Callable[[Path], str] | None = None) -> JobSpec:
    """Parse ``path``; ``upload`` turns a local file into a CID. With ``seal: true`` in the file
    a local input goes through ``upload_sealed`` instead (encrypted before it leaves)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"cannot read job file: {exc}", field=str(path)) from None
    if not isinstance(data, dict):
        raise InvalidArgument("a job file is a YAML mapping", field=str(path))
    seal = data.pop("seal", False)
    if not isinstance(seal, bool):
        raise InvalidArgument("expected true or false", field="seal")
    if seal and upload_sealed is None:
        raise InvalidArgument("this client cannot seal inputs", field="seal")
    for key, field in ARTIFACT_KEYS.items():
        if key not in data:
            continue
        value = str(data.pop(key))
        local = (path.parent / value).expanduser()
        if seal and key == "input" and not local.is_file():
            raise InvalidArgument("a sealed input must be a local file (it is encrypted before upload)", field="input")
        send = upload_sealed if seal and key == "input" else upload
        data[field] = send(local) if local.is_file() else value
    if "requirements" in data and isinstance(data["requirements"], dict):
        models = data["requirements"].get("gpu_models")
        if isinstance(models, list):
            data["requirements"]["gpu_models"] = tuple(models)
    return validate_spec(data)
