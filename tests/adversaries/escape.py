"""A workload that attacks the host-side reader of its output (as code running in the sandbox
would: a loader bug, a plug-in, a model format that runs code), then reports success.

Configured by env ``GPUMESH_ADVERSARY``: ``{"plant": ..., "target": PATH}`` where ``target`` is a
host file it wants the daemon to upload (the provider's wallet key). Plants:

* ``symlink``: ``output.jsonl`` is a symbolic link to ``target``.
* ``hardlink``: ``output.jsonl`` is a hard link to ``target``, or (where the sandbox hides it or
  links across mounts fail) to the host-written ``input.jsonl``.
* ``fifo``: ``output.jsonl`` is a FIFO (a reader that follows it would wait forever).
* ``socket``: ``output.jsonl`` is a listening Unix socket.
* ``oversize``: ``output.jsonl`` is larger than any provider limit the test sets.
* ``symlink_result``: ``result.json`` is a link to ``target``.
* ``abs_path``, ``dotdot_path``: a fine-tune result whose checkpoint path is absolute, or climbs out.
* ``symlink_checkpoint``: a fine-tune checkpoint directory that is a link to ``target``'s directory.
* ``symlink_final``: the fine-tune's ``final`` directory is a link to ``target``'s directory.

Standard library only: it must import inside any sandbox.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    for flag in ("--model", "--input", "--output", "--params", "--result", "--prompts", "--engine"):
        p.add_argument(flag)
    args, _ = p.parse_known_args(argv)
    config = json.loads(os.environ.get("GPUMESH_ADVERSARY") or "{}")
    plant, target = config["plant"], Path(config.get("target", "/nonexistent"))
    out, result = Path(args.output), Path(args.result)
    report = {"ok": True, "prompts": 1, "tokens_per_s": 1.0}
    if plant == "symlink":
        os.symlink(target, out)
    elif plant == "hardlink":
        try:
            os.link(target, out)
        except OSError:  # hidden, or on another mount: a link to a file the host wrote instead
            os.link(args.input, out)
    elif plant == "fifo":
        os.mkfifo(out)
    elif plant == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(out))
        sock.listen()
    elif plant == "oversize":
        with open(out, "wb") as f:
            f.truncate(int(config.get("bytes", 1 << 20)))
    elif plant == "symlink_result":
        out.write_text('{"id": "0", "prompt": "p", "completion": "c"}\n')
        os.symlink(target, result)
        return 0
    else:  # a fine-tune's output directory
        out.mkdir(parents=True, exist_ok=True)
        (out / "loss.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
        (out / "final").mkdir(exist_ok=True)
        (out / "final" / "adapter_config.json").write_text("{}")
        path = "checkpoints/step-000001"
        if plant == "abs_path":
            path = str(target.parent)
        elif plant == "dotdot_path":
            path = "../../" + target.parent.name
        elif plant == "symlink_checkpoint":
            (out / "checkpoints").mkdir()
            os.symlink(target.parent, out / path)
        elif plant == "symlink_final":
            (out / "checkpoints" / "step-000001").mkdir(parents=True)
            (out / "checkpoints" / "step-000001" / "weights.safetensors").write_bytes(b"w")
            os.rename(out / "final", out / "final.real")
            os.symlink(target.parent, out / "final")
        else:
            print(f"unknown plant {plant!r}", file=sys.stderr)
            return 2
        report = {"ok": True, "steps": 1, "checkpoints": [{"step": 1, "path": path}]}
    result.write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
