"""A finished job's records -> the batch's output and error files, line for line in OpenAI's
shape. Pure: records, evidence and the batch's request map in; JSONL bytes out.

Every input line gets exactly one line: its response (``response.body`` as the endpoint would
answer, plus the ``gpumesh`` evidence of the task that produced it) in the output file, or its
error in the error file. Order follows the input, which OpenAI does not promise either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from coordinator.batches.translate import LineError, Request


@dataclass(frozen=True)
class Evidence:
    """What stands behind one record: who computed it, how it was checked, what it cost."""

    provider: str  # the provider's wallet address
    task_id: str
    check: str  # "replica" | "audit" | "none"
    verdict: str
    result_cid: str
    signature: str  # hex, the provider's signed result commitment
    cost: int  # token base units, this record's share of its task's (and checks') charge

    def as_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "task_id": self.task_id, "check": self.check, "verdict": self.verdict,
                "result_cid": self.result_cid, "signature": self.signature, "cost": str(self.cost)}


@dataclass(frozen=True)
class Undelivered:
    """Why a request line has no result: its task failed, the batch was cancelled or expired."""

    code: str
    message: str


@dataclass(frozen=True)
class Files:
    output: bytes
    errors: bytes
    completed: int
    failed: int
    cost: int


def request_id(batch_id: str, line: int) -> str:
    return f"batch_req_{batch_id.removeprefix('batch_')}_{line}"


def build_files(batch_id: str, model: str, created: int, requests: list[Request], errors: list[LineError],
                records: dict[tuple[int, int], tuple[dict[str, Any], Evidence]],
                missing: Callable[[int], Undelivered]) -> Files:
    """``records``: delivered output records by ``(line, choice)`` with their evidence;
    ``missing(line)``: why a line without all its choices has none."""
    out, err = [], []
    completed = failed = cost = 0
    for r in requests:
        choices = [records.get((r.line, k)) for k in range(r.n)]
        rid = request_id(batch_id, r.line)
        if all(choices):
            body = _body(r, r.model or model, created, rid, choices)  # type: ignore[arg-type]
            cost += sum(e.cost for _, e in choices)  # type: ignore[misc]
            out.append({"id": rid, "custom_id": r.custom_id,
                        "response": {"status_code": 200, "request_id": rid, "body": body}, "error": None})
            completed += 1
        else:
            why = missing(r.line)
            err.append((r.line, {"id": rid, "custom_id": r.custom_id, "response": None,
                                 "error": {"code": why.code, "message": why.message, "line": r.line}}))
            failed += 1
    for e in errors:
        rid = request_id(batch_id, e.line)
        failed += 1
        if e.status_code:
            body = {"error": {"message": e.message, "type": "invalid_request_error", "param": e.param,
                              "code": e.code}}
            err.append((e.line, {"id": rid, "custom_id": e.custom_id, "error": None,
                                 "response": {"status_code": e.status_code, "request_id": rid, "body": body}}))
        else:
            err.append((e.line, {"id": rid, "custom_id": e.custom_id, "response": None,
                                 "error": {"code": e.code, "message": e.message, "param": e.param, "line": e.line}}))
    err.sort(key=lambda pair: pair[0])
    return Files(_jsonl(out), _jsonl(entry for _, entry in err), completed, failed, cost)


def _jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _usage(records: list[dict[str, Any]]) -> dict[str, int]:
    prompt = int(records[0].get("prompt_tokens") or 0)  # one prompt, counted once (as OpenAI counts n > 1)
    completion = sum(int(r.get("completion_tokens") or 0) for r in records)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _body(r: Request, model: str, created: int, rid: str,
          choices: list[tuple[dict[str, Any], Evidence]]) -> dict[str, Any]:
    records = [c for c, _ in choices]
    evidence = [e for _, e in choices]
    gpumesh = evidence[0].as_dict() | {"cost": str(sum(e.cost for e in evidence))}
    if len({e.task_id for e in evidence}) > 1:
        gpumesh["choices"] = [e.as_dict() for e in evidence]
    if r.seeds:
        gpumesh["seeds"] = list(r.seeds)
    if r.adapter:  # what the line ran under: base model + this LoRA adapter (both checked the same way)
        gpumesh["adapter_cid"] = r.adapter
    suffix = rid.removeprefix("batch_req_")
    if r.endpoint == "/v1/embeddings":
        tokens = sum(int(c.get("prompt_tokens") or 0) for c in records)
        return {"object": "list", "model": model,
                "data": [{"object": "embedding", "index": k, "embedding": _encoded(c["embedding"], r.encoding_format)}
                         for k, c in enumerate(records)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}, "gpumesh": gpumesh}
    if r.endpoint == "/v1/chat/completions":
        body = {"id": f"chatcmpl-{suffix}", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": k, "message": {"role": "assistant", "content": c["completion"],
                                                     "refusal": None},
                             "logprobs": {"content": c.get("logprobs") or [], "refusal": None}
                             if r.logprobs else None,
                             "finish_reason": c.get("finish_reason", "stop")} for k, c in enumerate(records)]}
    else:
        body = {"id": f"cmpl-{suffix}", "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": k, "text": c["completion"],
                             "logprobs": _completion_logprobs(c.get("logprobs") or []) if r.logprobs else None,
                             "finish_reason": c.get("finish_reason", "stop")} for k, c in enumerate(records)]}
    return body | {"usage": _usage(records), "system_fingerprint": "gpumesh", "gpumesh": gpumesh}


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    """OpenAI's ``encoding_format``: the floats, or base64 of little-endian float32s."""
    if encoding != "base64":
        return vector
    import base64
    import struct

    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _completion_logprobs(content: list[dict[str, Any]]) -> dict[str, Any]:
    """The legacy completions shape of per-token logprobs."""
    offsets, at = [], 0
    for t in content:
        offsets.append(at)
        at += len(t["token"])
    return {"tokens": [t["token"] for t in content], "token_logprobs": [t["logprob"] for t in content],
            "top_logprobs": [{a["token"]: a["logprob"] for a in t.get("top_logprobs", [])} for t in content],
            "text_offset": offsets}
