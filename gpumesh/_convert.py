"""Conversions between the job spec and its protobuf message, shared by SDK and coordinator."""

from __future__ import annotations

import json
from datetime import timezone

from google.protobuf.timestamp_pb2 import Timestamp

from gpumesh.amounts import parse_amount
from gpumesh.errors import InvalidArgument
from gpumesh.jobspec import JobSpec, validate_spec
from gpumesh.v1 import common_pb2, jobs_pb2


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def spec_from_proto(msg: jobs_pb2.JobSpec) -> JobSpec:
    """Proto3 zero values mean "default"; validation errors name the offending field."""
    data: dict = {"model_cid": msg.model_cid, "input_cid": msg.input_cid}
    if msg.name:
        data["name"] = msg.name
    if msg.kind:
        data["kind"] = msg.kind
    if msg.HasField("inference"):
        inf = {k: v for k, v in (("max_new_tokens", msg.inference.max_new_tokens),
                                 ("batch_size", msg.inference.batch_size)) if v}
        inf["chat"] = msg.inference.chat
        data["inference"] = inf
    if msg.HasField("requirements"):
        r = msg.requirements
        data["requirements"] = {
            "gpu_count": r.gpu_count,
            "gpu_models": tuple(r.gpu_models),
            "min_vram_mb": r.min_vram_mb,
            "allow_cpu": r.allow_cpu,
            "min_memory_mb": r.min_memory_mb,
            "isolated": r.isolated,
            "model_memory_mb": r.model_memory_mb,
        }
    if msg.max_price_per_hour:
        data["max_price_per_hour"] = parse_amount(msg.max_price_per_hour, field="spec.max_price_per_hour")
    for name in ("shard_size", "max_attempts", "task_timeout_s"):
        if value := getattr(msg, name):
            data[name] = value
    if msg.HasField("deadline"):
        try:
            data["deadline"] = msg.deadline.ToDatetime(tzinfo=timezone.utc)
        except (ValueError, OverflowError):
            raise InvalidArgument("not a valid timestamp (years 1-9999, 0 <= nanos < 1e9)",
                                  field="spec.deadline") from None
    if msg.finetune_json:
        if len(msg.finetune_json) > 16 * 1024:
            raise InvalidArgument("at most 16 KiB", field="spec.finetune_json")
        try:
            data["finetune"] = json.loads(msg.finetune_json)
        except ValueError as exc:
            raise InvalidArgument(f"not JSON: {exc}", field="spec.finetune_json") from None
        except RecursionError:
            raise InvalidArgument("JSON nested too deeply", field="spec.finetune_json") from None
    if msg.fallback:
        data["fallback"] = msg.fallback
    if msg.output_sealing_key:
        if len(msg.output_sealing_key) != 32:
            raise InvalidArgument("an X25519 public key is 32 bytes", field="spec.output_sealing_key")
        data["output_sealing_key"] = msg.output_sealing_key.hex()
    if msg.adapter_cids:
        data["adapter_cids"] = tuple(msg.adapter_cids)
    if msg.HasField("verification"):
        v = msg.verification
        data["verification"] = {k: getattr(v, k) for k in ("min_replication", "audit_rate", "allow_unchecked")
                                if v.HasField(k)}
    return validate_spec(data)


def spec_to_proto(spec: JobSpec) -> jobs_pb2.JobSpec:
    r = spec.requirements
    msg = jobs_pb2.JobSpec(
        name=spec.name,
        kind=spec.kind,
        model_cid=spec.model_cid,
        input_cid=spec.input_cid,
        inference=jobs_pb2.InferenceParams(**spec.inference.model_dump()),
        requirements=common_pb2.Requirements(
            gpu_count=r.gpu_count,
            gpu_models=list(r.gpu_models),
            min_vram_mb=r.min_vram_mb,
            allow_cpu=r.allow_cpu,
            min_memory_mb=r.min_memory_mb,
            isolated=r.isolated,
            model_memory_mb=r.model_memory_mb,
        ),
        max_price_per_hour=str(spec.max_price_per_hour),
        shard_size=spec.shard_size,
        max_attempts=spec.max_attempts,
        task_timeout_s=spec.task_timeout_s,
        fallback=spec.fallback,
        output_sealing_key=bytes.fromhex(spec.output_sealing_key),
        adapter_cids=list(spec.adapter_cids),
    )
    if spec.deadline is not None:
        msg.deadline.FromDatetime(spec.deadline)
    if spec.finetune:
        msg.finetune_json = json.dumps(spec.finetune, sort_keys=True)
    v = {k: x for k, x in spec.verification.model_dump().items() if x is not None}
    msg.verification.CopyFrom(jobs_pb2.VerificationParams(**v))
    return msg
