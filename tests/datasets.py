"""Small training sets the fine-tune tests share."""

from __future__ import annotations

import json
from pathlib import Path


def mixed_finetune_data(path: Path) -> Path:
    """Six records alternating the two dataset forms (``prompt``/``completion`` and ``text``)."""
    rows = [{"text": f"the {a} {v} the mat"} if i % 2 else {"prompt": f"what did the {a} do?", "completion": f" {v}"}
            for i, (a, v) in enumerate((a, v) for a in ("cat", "dog", "owl") for v in ("sat on", "ran to"))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
