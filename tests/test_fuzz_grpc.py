"""Fuzzing the gRPC surface of a real coordinator on a loopback socket (hypothesis, derandomized).

Every method of SubmitterService, ProviderService and ArtifactService gets (a) random raw bytes
as its request body, (b) messages with random field values built from the proto descriptors
(odd unicode, huge strings, negative and huge numbers, empty and oversized repeated fields) and
(c) messages over the server's receive limit. Every answer must be a clear status code (never
UNKNOWN or INTERNAL), an INVALID_ARGUMENT must name the field at fault, and the server must be
healthy afterwards (health check, and a normal signed submit through the SDK). Provider sessions
get random heartbeats, results and failures on an authenticated stream.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from dataclasses import dataclass

import eth_account  # noqa: F401 -- first: it imports py_ecc, which raises the recursion limit (see the last test)
import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpumesh.client import Client
from gpumesh.identity import Wallet, result_text
from gpumesh.jobspec import JobSpec
from gpumesh.signing import STREAM_BODY, sign_registration, sign_request
from gpumesh.v1 import artifacts_pb2, jobs_pb2, provider_pb2, provider_pb2_grpc

MAX_MESSAGE = 256 * 1024  # tests/conftest.py's coordinator_settings
CLEAR = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.ALREADY_EXISTS,
}
NAMES_A_FIELD = re.compile(r"^[A-Za-z_][\w.\-\[\]]*: ")  # GpumeshError's "field: message"
SUBMITTER = "/gpumesh.v1.SubmitterService/"
ARTIFACTS = "/gpumesh.v1.ArtifactService/"
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])


@dataclass(frozen=True)
class Method:
    path: str
    request: type
    client_streaming: bool
    server_streaming: bool

    def __str__(self) -> str:
        return self.path.rsplit(".", 1)[-1]


METHODS = [
    Method(f"/{service.full_name}/{m.name}", GetMessageClass(m.input_type), m.client_streaming, m.server_streaming)
    for module, name in ((jobs_pb2, "SubmitterService"), (provider_pb2, "ProviderService"),
                         (artifacts_pb2, "ArtifactService"))
    for service in [module.DESCRIPTOR.services_by_name[name]]
    for m in service.methods
]
SESSION = next(m for m in METHODS if m.path.endswith("/Session"))


# ---- the server and one call ------------------------------------------------------------------


@pytest.fixture
def coordinator_settings(coordinator_settings):
    return coordinator_settings.model_copy(update={"rate_limit": False})  # fuzzing is a burst by design


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(server.target) as ch:
        yield ch
    _assert_healthy(server.target)


@pytest.fixture(scope="module")
def wallet() -> Wallet:
    return Wallet.generate()


@pytest.fixture
def provider(channel):
    """A registered provider: (wallet, session metadata)."""
    stub = provider_pb2_grpc.ProviderServiceStub(channel)
    who = Wallet.generate()
    challenge = stub.GetChallenge(provider_pb2.GetChallengeRequest(address=who.address), timeout=10).challenge
    resp = stub.Register(sign_registration(who, provider_pb2.RegisterRequest(
        address=who.address, challenge=challenge, name="fuzz", slots=1, sealing_public_key=b"\x09" * 32,
    )), timeout=10)
    return who, (("authorization", f"Bearer {resp.session_token}"),)


def _assert_healthy(target: str) -> None:
    with grpc.insecure_channel(target) as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    with Client.connect(target) as client:
        spec = JobSpec(name="after-fuzz", model_cid=client.upload(b"model"),
                       input_cid=client.upload(b'{"prompt": "still here?"}\n'))
        handle = client.submit(spec)
        assert client.get_job(handle.id).state == "QUEUED"


def _metadata(method: Method, body: bytes, wallet: Wallet | None, extra=()) -> tuple:
    """Submitter and artifact calls signed over the message the server will decode from ``body``
    (a client-streaming upload over the empty body)."""
    if wallet is None or not method.path.startswith((SUBMITTER, ARTIFACTS)):
        return tuple(extra)
    if method.client_streaming:
        return (*extra, *sign_request(wallet, method.path, STREAM_BODY))
    try:
        message = method.request.FromString(body)
    except Exception:  # undecodable: signed over an empty message, refused for the body anyway
        message = method.request()
    return (*extra, *sign_request(wallet, method.path, message))


def call(channel, method: Method, bodies: list[bytes], metadata=()) -> tuple[grpc.StatusCode, str, list]:
    """One call with raw request bodies (identity serializers); its status, details and replies."""
    kw = dict(metadata=metadata, timeout=15)
    try:
        if method.client_streaming and method.server_streaming:
            replies = list(channel.stream_stream(method.path)(iter(bodies), **kw))
        elif method.client_streaming:
            replies = [channel.stream_unary(method.path)(iter(bodies), **kw)]
        elif method.server_streaming:
            replies = list(channel.unary_stream(method.path)(bodies[0], **kw))
        else:
            replies = [channel.unary_unary(method.path)(bodies[0], **kw)]
        return grpc.StatusCode.OK, "", replies
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", []


def assert_clear(method: Method, code: grpc.StatusCode, details: str, *, decoded: bool) -> None:
    assert code in CLEAR, f"{method}: {code.name}: {details}"
    if code is grpc.StatusCode.INVALID_ARGUMENT and decoded:
        assert NAMES_A_FIELD.match(details), f"{method}: INVALID_ARGUMENT names no field: {details!r}"


# ---- message strategies from the descriptors --------------------------------------------------

ODD_TEXT = st.sampled_from([
    "", " ", "\x00", "\x00" * 64, "\u202e\u0301\u200b", "\ufeff", "\U0001F600" * 5, "é" * 300, "A" * 70_000,
    "job_" + "0" * 16, "job_\x00", "../../../etc/passwd", "-1", "1e999", "NaN", "0x" + "0" * 64,
    "0x" + "f" * 40, str(2**256), str(2**256 - 1), "١٢٣", "{}", "[]", "null", '{"method": "lora"}',
    "bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvhdmmbkqwfqmltd4y", "bafy" + "a" * 5000, "Qm" + "1" * 44,
])
TEXT = st.one_of(st.text(max_size=40), ODD_TEXT, st.text(min_size=500, max_size=3000))
INTS = {
    FieldDescriptor.TYPE_INT32: (-2**31, 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-2**31, 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-2**31, 2**31 - 1), FieldDescriptor.TYPE_INT64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-2**63, 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Timestamps stay in the range protobuf can convert: out-of-range ones are a known bug, see
# test_out_of_range_deadline_is_invalid_argument.
TIMESTAMP_SECONDS = (-62135596800, 253402300799)


def scalar(field: FieldDescriptor) -> st.SearchStrategy:
    t = field.type
    if t in INTS:
        lo, hi = INTS[t]
        return st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0, 1, -1 if lo < 0 else 2]))
    if t == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if t == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_STRING:
        return TEXT
    if t == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=80), st.just(b"\xff" * 65), st.binary(min_size=1000, max_size=4000))
    if t == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-2**31, 2**31 - 1))
    raise AssertionError(f"no strategy for field type {t}")


def messages(descriptor, depth: int = 0) -> st.SearchStrategy:
    """Messages of ``descriptor`` with any subset of fields set to random values."""
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.builds(lambda s, n: GetMessageClass(descriptor)(seconds=s, nanos=n),
                         st.integers(*TIMESTAMP_SECONDS), st.integers(0, 999_999_999))
    fields = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            one = st.deferred(lambda f=field: messages(f.message_type, depth + 1))
        else:
            one = scalar(field)
        if field.is_repeated and depth >= 2:  # oversized lists of oversized lists would not fit in memory
            value = st.lists(one, max_size=4)
        elif field.is_repeated:
            value = st.one_of(st.lists(one, max_size=4),
                              st.builds(lambda x, n: [x] * n, one, st.integers(100, 3000)))  # oversized
        else:
            value = one
        fields[field.name] = st.one_of(st.none(), value)
    return st.fixed_dictionaries(fields).map(lambda values: _build(descriptor, values))


def _build(descriptor, values: dict):
    msg = GetMessageClass(descriptor)()
    for name, value in values.items():
        if value is None:
            continue
        field = descriptor.fields_by_name[name]
        if field.is_repeated:
            target = getattr(msg, name)
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(msg, name).CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


# ---- (a) raw bytes, (b) random messages, (c) oversized ---------------------------------------

BODIES = st.one_of(st.binary(max_size=600), st.builds(lambda b: b"\x0a" + bytes([len(b)]) + b, st.binary(max_size=100)))


@pytest.mark.parametrize("method", METHODS, ids=str)
@FUZZ
@given(bodies=st.lists(BODIES, min_size=1, max_size=4))
def test_random_bytes_get_a_clear_status(channel, wallet, provider, method, bodies):
    extra = provider[1] if method is SESSION else ()
    code, details, _ = call(channel, method, bodies, _metadata(method, bodies[0], wallet, extra))
    assert_clear(method, code, details, decoded=not details.startswith("request: the request body"))


@pytest.mark.parametrize("method", METHODS, ids=str)
@FUZZ
@given(data=st.data())
def test_random_messages_get_a_clear_status_naming_the_field(channel, wallet, method, data):
    requests = data.draw(st.lists(messages(method.request.DESCRIPTOR), min_size=1, max_size=3))
    bodies = [r.SerializeToString() for r in requests]
    signer = data.draw(st.sampled_from([wallet, None]))  # signed (reaches the handlers) or not
    code, details, _ = call(channel, method, bodies, _metadata(method, bodies[0], signer))
    assert_clear(method, code, details, decoded=True)


@pytest.mark.parametrize("method", METHODS, ids=str)
def test_messages_over_the_receive_limit_are_resource_exhausted(channel, wallet, provider, method):
    big = b"\x0a" + _varint(MAX_MESSAGE + 1024) + b"a" * (MAX_MESSAGE + 1024)  # field 1, one long value
    extra = provider[1] if method is SESSION else ()
    code, details, _ = call(channel, method, [big], _metadata(method, big, wallet, extra))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method}: {code.name}: {details}"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# ---- deeper: a properly signed registration, an authenticated session ------------------------

REGISTER_FIELDS = messages(provider_pb2.RegisterRequest.DESCRIPTOR)


@FUZZ
@given(fields=REGISTER_FIELDS, usable_key=st.booleans())
def test_signed_registration_with_random_fields_gets_a_clear_status(channel, fields, usable_key):
    stub = provider_pb2_grpc.ProviderServiceStub(channel)
    who = Wallet.generate()
    challenge = stub.GetChallenge(provider_pb2.GetChallengeRequest(address=who.address), timeout=10).challenge
    fields.address, fields.challenge = who.address, challenge
    if usable_key:  # else whatever bytes were drawn: the offer's other fields are reached either way
        fields.sealing_public_key = b"\x09" * 32
    sign_registration(who, fields)  # the signature covers the whole offer: sign the random one
    method = next(m for m in METHODS if m.path.endswith("/Register"))
    code, details, _ = call(channel, method, [fields.SerializeToString()])
    assert_clear(method, code, details, decoded=True)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=12)
FINETUNE_KEYS = st.sampled_from(["method", "steps", "checkpoint_every", "lr", "lora_rank", "batch_size", "seed"])


@st.composite
def job_requests(draw, cids: list[str]):
    """A SubmitJob whose CIDs mostly exist, so random values reach the spec's deeper checks."""
    spec = draw(messages(jobs_pb2.JobSpec.DESCRIPTOR))
    if draw(st.integers(0, 4)):
        spec.model_cid, spec.input_cid = draw(st.sampled_from(cids)), draw(st.sampled_from(cids))
    spec.kind = draw(st.sampled_from(["", "inference", "finetune", spec.kind]))
    if draw(st.booleans()):
        params = draw(st.one_of(JSON, st.dictionaries(FINETUNE_KEYS, JSON, max_size=5)))
        spec.finetune_json = draw(st.sampled_from([json.dumps(params), spec.finetune_json]))
    return jobs_pb2.SubmitJobRequest(spec=spec, idempotency_key=draw(st.sampled_from(["", "k", "é" * 200])),
                                     escrow_key=draw(st.sampled_from(["", "0x" + "0" * 64, "zz"])))


def test_signed_submissions_with_random_specs_get_a_clear_status(channel, wallet):
    client = Client(channel, wallet=wallet)
    cids = [client.upload(b'{"prompt": "a"}\n{"prompt": "b"}\n'), client.upload(b"not jsonl \xff"),
            client.upload(b'{"messages": [{"role": "user", "content": "hi"}], "completion": "yo"}\n')]
    method = next(m for m in METHODS if m.path.endswith("/SubmitJob"))

    @FUZZ
    @given(request=job_requests(cids))
    def fuzz(request):
        body = request.SerializeToString()
        code, details, _ = call(channel, method, [body], _metadata(method, body, wallet))
        assert_clear(method, code, details, decoded=True)

    fuzz()


@st.composite
def provider_messages(draw, who: Wallet, cids: list[str]):
    msg = draw(messages(provider_pb2.ProviderMessage.DESCRIPTOR))
    if msg.WhichOneof("body") == "result" and draw(st.booleans()):  # a validly signed claim
        if draw(st.booleans()):
            msg.result.output_cid = draw(st.sampled_from(cids))
        msg.result.signature = who.sign_text(result_text(msg.result.task_id, msg.result.output_cid))
    return msg


def test_a_session_survives_random_provider_messages(channel, provider, caplog):
    who, auth = provider
    cids = [Client(channel).upload(b"an output")]

    @FUZZ
    @given(batch=st.lists(provider_messages(who, cids), min_size=1, max_size=6))
    def fuzz(batch):
        caplog.clear()
        code, details, replies = call(channel, SESSION, [m.SerializeToString() for m in batch], auth)
        assert code in CLEAR, f"{code.name}: {details}"
        kinds = [provider_pb2.CoordinatorMessage.FromString(r).WhichOneof("body") for r in replies]
        assert set(kinds) <= {"accepted", "ack", "cancel", "check"}, kinds  # "check": its hardware check
        if code is grpc.StatusCode.OK:  # (an oversized batch is refused before the session opens)
            assert kinds[:1] == ["accepted"], kinds
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text

    with caplog.at_level(logging.WARNING):
        fuzz()


# ---- bugs fuzzing found (fixed) ------------------------------------------------------------------


@pytest.mark.parametrize("seconds,nanos", [(2**62, 0), (-2**62, 0), (4102444800, -5)])
def test_out_of_range_deadline_is_invalid_argument(channel, wallet, seconds, nanos):
    from google.protobuf.timestamp_pb2 import Timestamp

    method = next(m for m in METHODS if m.path.endswith("/SubmitJob"))
    cid = Client(channel, wallet=wallet).upload(b'{"prompt": "x"}\n')
    body = jobs_pb2.SubmitJobRequest(spec=jobs_pb2.JobSpec(
        model_cid=cid, input_cid=cid, deadline=Timestamp(seconds=seconds, nanos=nanos))).SerializeToString()
    code, details, _ = call(channel, method, [body], _metadata(method, body, wallet))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith("spec.deadline: "), (code, details)


NESTED = "[" * 100_000 + "]" * 100_000  # 200 KB: under every size limit


@pytest.mark.e2e
@pytest.mark.parametrize("where", ["finetune_json", "input_line"])
def test_deeply_nested_json_is_refused_without_crashing_the_coordinator(tmp_path, wallet, where):
    from gpumesh.localnet import LocalNetwork

    method = next(m for m in METHODS if m.path.endswith("/SubmitJob"))
    with LocalNetwork(tmp_path / "net") as net:
        net.start_coordinator()  # a real process: the crash must not take pytest with it
        with Client.connect(net.target, wallet=wallet) as client:
            model = client.upload(b"model")
            data = client.upload(b'{"prompt": ' + NESTED.encode() + b"}\n" if where == "input_line" else b'{"prompt": "x"}\n')
        spec = jobs_pb2.JobSpec(model_cid=model, input_cid=data)
        if where == "finetune_json":
            spec.kind, spec.finetune_json = "finetune", NESTED
        body = jobs_pb2.SubmitJobRequest(spec=spec).SerializeToString()
        with grpc.insecure_channel(net.target) as channel:
            code, details, _ = call(channel, method, [body], _metadata(method, body, wallet))
        try:
            net.coordinator.popen.wait(3)  # a crashed process may take a moment to be reaped
        except subprocess.TimeoutExpired:
            pass
        alive = net.coordinator.alive
    assert alive, f"the coordinator died ({code.name}: {details})"
    assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith("spec."), (code, details)
