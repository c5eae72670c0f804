"""The submitter SDK: ``Client.connect(target)`` then ``client.submit(...)`` for a JobHandle."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import grpc

from gpumesh._convert import spec_to_proto
from gpumesh.artifacts.remote import RemoteArtifactStore
from gpumesh.artifacts.sealed import OpenedView
from gpumesh.errors import GpumeshError, InvalidArgument, NotFound, Unavailable
from gpumesh.identity import Wallet
from gpumesh.jobspec import JobSpec
from gpumesh.rpc import TlsConfig, tls_from_env, translate_rpc_error
from gpumesh.sealing import SealingKey, new_data_key, seal_stream, wrap_key
from gpumesh.signing import SigningInterceptor
from gpumesh.rpc import channel as rpc_channel
from gpumesh.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc

_TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job as the coordinator reports it."""

    job_id: str
    state: str  # QUEUED, RUNNING, VERIFYING, COMPLETED, FAILED, CANCELLED
    tasks_total: int
    tasks_done: int
    tasks_running: int
    prompts_total: int
    output_cid: str
    error: str
    pending_reason: str
    raw: jobs_pb2.Job

    @property
    def terminal(self) -> bool:
        return self.state in _TERMINAL

    @classmethod
    def from_proto(cls, msg: jobs_pb2.Job) -> JobStatus:
        return cls(
            job_id=msg.job_id,
            state=common_pb2.JobState.Name(msg.state).removeprefix("JOB_STATE_"),
            tasks_total=msg.tasks_total,
            tasks_done=msg.tasks_done,
            tasks_running=msg.tasks_running,
            prompts_total=msg.prompts_total,
            output_cid=msg.output_cid,
            error=msg.error,
            pending_reason=msg.pending_reason,
            raw=msg,
        )


class JobFailed(GpumeshError):
    """The job ended FAILED or CANCELLED."""

    grpc_code = "ABORTED"


class Client:
    """A connection to one coordinator. Thread-safe; close it (or use ``with``) when done."""

    def __init__(self, channel: grpc.Channel, *, timeout: float = 30.0, chain_url: str = "",
                 wallet: Wallet | None = None) -> None:
        self._channel = channel
        self._timeout = timeout
        self._chain_url = chain_url  # overrides the coordinator's advertised JSON-RPC endpoint
        self._wallet: Wallet | None = None
        self._jobs: jobs_pb2_grpc.SubmitterServiceStub | None = None
        self._artifacts: RemoteArtifactStore | None = None
        if wallet is not None:
            self._use(wallet)
        self._public = jobs_pb2_grpc.SubmitterServiceStub(channel)  # calls that name no job: unsigned
        self._sealed: dict[str, bytes] = {}  # cid -> data key of what this client sealed
        self._coordinator_key: bytes | None = None

    @property
    def wallet(self) -> Wallet:
        """The identity that signs this client's calls and owns its jobs: the wallet given to
        ``connect``, else the first passed to ``submit``, else a new one for this client only."""
        if self._wallet is None:
            self._use(Wallet.generate())
        return self._wallet

    def _use(self, wallet: Wallet) -> None:
        self._wallet = wallet
        signed = grpc.intercept_channel(self._channel, SigningInterceptor(wallet))
        self._jobs = jobs_pb2_grpc.SubmitterServiceStub(signed)
        self._artifacts = RemoteArtifactStore(signed)  # uploads are this wallet's; it reads what it may

    @property
    def artifacts(self) -> RemoteArtifactStore:
        """The coordinator's artifact store, as this client's wallet (see ``Client.wallet``)."""
        if self._artifacts is None:
            self._use(self.wallet)
        return self._artifacts

    @property
    def _stub(self) -> jobs_pb2_grpc.SubmitterServiceStub:
        if self._jobs is None:
            self._use(self.wallet)
        return self._jobs

    @classmethod
    def connect(
        cls, target: str = "127.0.0.1:50051", *, timeout: float = 30.0, wait_ready: float = 10.0, chain_url: str = "",
        tls: TlsConfig | None = None, wallet: Wallet | None = None,
    ) -> Client:
        """Connect to a coordinator; ``tls`` (default: from ``GPUMESH_TLS_*``, else plaintext);
        ``wallet`` signs the calls and owns the jobs (see ``Client.wallet``)."""
        channel = rpc_channel(target, tls if tls is not None else tls_from_env())
        try:
            grpc.channel_ready_future(channel).result(timeout=wait_ready)
        except grpc.FutureTimeoutError:
            channel.close()
            raise Unavailable(f"coordinator at {target} is not reachable") from None
        return cls(channel, timeout=timeout, chain_url=chain_url, wallet=wallet)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- artifacts ------------------------------------------------------------------------

    def upload(self, source: Path | str | bytes, *, seal: bool = False,
               progress: Callable[[int], None] | None = None) -> str:
        """Upload a file path or bytes; returns the CID.

        ``seal``: encrypt it first (AES-256-GCM under a new data key; the CID is the ciphertext's).
        A job whose input this client sealed gets the key wrapped to the coordinator, which passes it
        on, wrapped to each provider, only with that provider's leases. ``progress`` is called with
        the bytes read so far, after each chunk."""
        if not seal and progress is None:
            if isinstance(source, bytes):
                return self.artifacts.put_bytes(source)
            return self.artifacts.put_file(Path(source))
        chunks = [source] if isinstance(source, bytes) else _read_chunks(Path(source))
        if progress is not None:
            chunks = _counted(chunks, progress)
        if not seal:
            return self.artifacts.put_stream(chunks)
        data_key = new_data_key()
        cid = self.artifacts.put_stream(seal_stream(chunks, data_key))
        self._sealed[cid] = data_key
        return cid

    def download(self, cid: str, dest: Path | None = None, *, data_key: bytes | None = None,
                 progress: Callable[[int], None] | None = None) -> bytes | None:
        """Fetch (and verify) ``cid``: to ``dest`` if given, else returned as bytes. A sealed
        artifact is opened with ``data_key`` (or the key this client sealed it with). ``progress``
        is called with the bytes received so far, after each chunk."""
        key = data_key or self._sealed.get(cid)
        store = OpenedView(self.artifacts, lambda c: key if c == cid else None) if key else self.artifacts
        if progress is not None:
            from gpumesh.artifacts.base import write_atomically

            chunks = _counted(store.iter_bytes(cid), progress)
            if dest is None:
                return b"".join(chunks)
            write_atomically(chunks, dest)
            return None
        if dest is None:
            return store.get_bytes(cid)
        store.get_file(cid, dest)
        return None

    @property
    def sealing_key(self) -> SealingKey:
        """This client's X25519 key (derived from its wallet): sealed outputs are wrapped to it."""
        return SealingKey.derive(self.wallet.private_key)

    def coordinator_sealing_key(self) -> bytes:
        if self._coordinator_key is None:
            with translate_rpc_error():
                info = self._public.GetSealingKey(jobs_pb2.GetSealingKeyRequest(), timeout=self._timeout)
            self._coordinator_key = info.public_key
        return self._coordinator_key

    # ---- jobs -----------------------------------------------------------------------------

    def settlement_info(self) -> jobs_pb2.SettlementInfo:
        with translate_rpc_error():
            return self._public.GetSettlementInfo(jobs_pb2.GetSettlementInfoRequest(), timeout=self._timeout)

    def chain(self, info: jobs_pb2.SettlementInfo | None = None):
        """A ChainClient on the coordinator's settlement chain (``None`` if it doesn't settle)."""
        info = info or self.settlement_info()
        if not info.enabled:
            return None
        from gpumesh.chain import ChainClient, Deployment

        deployment = Deployment(chain_id=info.chain_id, token=info.token, registry=info.registry, escrow=info.escrow)
        return ChainClient.connect(self._chain_url or info.chain_url, deployment)

    def submit(
        self,
        spec: JobSpec,
        *,
        idempotency_key: str | None = None,
        budget: int | None = None,
        wallet: Wallet | None = None,
        deposit_window_s: int = 24 * 3600,
        seal_output: bool | None = None,
    ) -> JobHandle:
        """Submit a job; retries are safe because of the idempotency key.

        A job whose input was uploaded with ``seal=True`` runs sealed: only the providers given its
        tasks can read the input, and (``seal_output``, default on for such an inference job) the
        outputs are sealed to this client's key; ``JobHandle.outputs`` opens them.

        On a coordinator that settles on-chain, ``budget`` (token base units) is first deposited
        into the escrow from ``wallet`` (default: the client's own); whatever the job does not
        spend is refunded to it. The depositor must be the wallet that signs the call.
        """
        if wallet is not None and self._wallet is None:
            self._use(wallet)  # the depositing wallet signs, and owns the job
        elif wallet is not None and wallet.address != self._wallet.address:
            raise InvalidArgument(f"this client signs as {self._wallet.address}: deposit from that wallet, or "
                                  "connect a client with wallet=", field="wallet")
        input_keys = []
        if spec.input_cid in self._sealed:  # its data key goes to the coordinator only
            input_keys.append(common_pb2.SealedKey(
                cid=spec.input_cid, wrapped_key=wrap_key(self._sealed[spec.input_cid], self.coordinator_sealing_key())))
            if seal_output is None:
                seal_output = spec.kind == "inference"
        if seal_output:
            spec = spec.model_copy(update={"output_sealing_key": self.sealing_key.public_bytes.hex()})
        key = idempotency_key or uuid.uuid4().hex
        escrow_key = self._deposit(key, budget, wallet, deposit_window_s)
        request = jobs_pb2.SubmitJobRequest(spec=spec_to_proto(spec), idempotency_key=key, escrow_key=escrow_key,
                                            input_keys=input_keys)
        with translate_rpc_error():
            resp = self._stub.SubmitJob(request, timeout=self._timeout)
        return JobHandle(self, resp.job.job_id)

    def _deposit(self, key: str, budget: int | None, wallet: Wallet | None, window_s: int) -> str:
        info = self.settlement_info()
        chain = self.chain(info)
        if chain is None:
            return ""
        wallet = wallet or self._wallet
        if budget is None or budget <= 0 or wallet is None:
            raise InvalidArgument("this coordinator settles on-chain: pass budget= (> 0) and wallet=",
                                  field="budget" if wallet is not None else "wallet")
        from eth_account import Account

        from gpumesh.chain import JobStatus, job_key_hex

        escrow_key = job_key_hex(key)  # the escrow keys it by this id and the depositor's address
        if chain.job(wallet.address, escrow_key).status is JobStatus.NONE:  # a retried submit must not pay twice
            window = max(window_s, int(info.min_escrow_window_s) * 2)
            chain.deposit(Account.from_key(wallet.private_key), escrow_key, budget, chain.block_timestamp() + window)
        return escrow_key

    def submit_inference(
        self,
        *,
        model: Path | str,
        prompts: list[str] | Path,
        name: str = "inference",
        budget: int | None = None,
        wallet: Wallet | None = None,
        seal: bool = False,
        **options,
    ) -> JobHandle:
        """Convenience: upload a model file and prompts (a list or a JSONL path), then submit
        (depositing ``budget`` from ``wallet`` when the coordinator settles on-chain); ``seal``
        encrypts the prompts and the outputs (see ``submit``)."""
        model_cid = model if isinstance(model, str) and not Path(model).exists() else self.upload(model)
        if isinstance(prompts, Path):
            input_cid = self.upload(prompts, seal=seal)
        else:
            input_cid = self.upload("".join(json.dumps({"prompt": p}) + "\n" for p in prompts).encode(), seal=seal)
        spec = JobSpec(name=name, model_cid=model_cid, input_cid=input_cid, **options)
        return self.submit(spec, budget=budget, wallet=wallet)

    def get_job(self, job_id: str) -> JobStatus:
        with translate_rpc_error():
            return JobStatus.from_proto(self._stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=self._timeout))

    def cancel(self, job_id: str, reason: str = "") -> JobStatus:
        with translate_rpc_error():
            msg = self._stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id, reason=reason), timeout=self._timeout)
        return JobStatus.from_proto(msg)

    def watch(
        self, job_id: str, *, timeout: float | None = None, reconnect_for: float = 120.0
    ) -> Iterator[JobStatus]:
        """Stream status changes until the job is terminal, riding out coordinator restarts.
        Raises TimeoutError when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        down_since: float | None = None
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                for msg in self._stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id), timeout=left):
                    down_since = None
                    status = JobStatus.from_proto(msg)
                    yield status
                    if status.terminal:
                        return
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                    raise TimeoutError(f"job {job_id} not finished after {timeout}s") from None
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    with translate_rpc_error():
                        raise
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > reconnect_for:
                    raise Unavailable(f"coordinator unreachable for {reconnect_for:.0f}s") from exc
                time.sleep(0.5)

    def list_jobs(self, *, page_size: int = 20, page_token: str = "",
                  with_tasks: bool = False) -> tuple[list[JobStatus], str]:
        """This wallet's jobs, newest first: one page and the token of the next ("" at the end)."""
        with translate_rpc_error():
            resp = self._stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=page_size, page_token=page_token,
                                                                with_tasks=with_tasks), timeout=self._timeout)
        return [JobStatus.from_proto(j) for j in resp.jobs], resp.next_page_token

    def iter_jobs(self, *, page_size: int = 50) -> Iterator[JobStatus]:
        token = ""
        while True:
            jobs, token = self.list_jobs(page_size=page_size, page_token=token)
            yield from jobs
            if not token:
                return

    def create_api_key(self, *, name: str = "", spend_cap: int | None = None) -> jobs_pb2.ApiKeyInfo:
        """An HTTP API key bound to this client's wallet (``key`` is shown only here)."""
        with translate_rpc_error():
            return self._stub.CreateApiKey(jobs_pb2.CreateApiKeyRequest(
                name=name, spend_cap="" if spend_cap is None else str(spend_cap)), timeout=self._timeout)

    def list_api_keys(self) -> list[jobs_pb2.ApiKeyInfo]:
        with translate_rpc_error():
            return list(self._stub.ListApiKeys(jobs_pb2.ListApiKeysRequest(), timeout=self._timeout).keys)

    def revoke_api_key(self, key_id: str) -> jobs_pb2.ApiKeyInfo:
        with translate_rpc_error():
            return self._stub.RevokeApiKey(jobs_pb2.RevokeApiKeyRequest(key_id=key_id), timeout=self._timeout)

    def list_models(self) -> list[jobs_pb2.ModelInfo]:
        with translate_rpc_error():
            # signed when this client has a wallet: its own fine-tuned models are listed too
            stub = self._jobs if self._wallet is not None else self._public
            return list(stub.ListModels(jobs_pb2.ListModelsRequest(), timeout=self._timeout).models)

    def add_model(self, name: str, source: Path | str | bytes, *, min_memory_mb: int = 0,
                  replace: bool = False, base: str = "") -> jobs_pb2.ModelInfo:
        """Register a model under ``name``: ``source`` is a CID already uploaded, or a path/bytes to
        upload. A LoRA adapter (a tar of a peft adapter directory) names its ``base`` model."""
        cid = source if isinstance(source, str) and _is_cid(source) else self.upload(source)
        with translate_rpc_error():
            return self._stub.AddModel(jobs_pb2.AddModelRequest(name=name, cid=cid, min_memory_mb=min_memory_mb,
                                                                replace=replace, base=base), timeout=self._timeout)

    def job_events(self, job_id: str, *, after: int = 0, limit: int = 100) -> list[jobs_pb2.JobEvent]:
        """The job's events after sequence number ``after``, oldest first (a fine-tune's loss per step)."""
        with translate_rpc_error():
            return list(self._stub.ListJobEvents(jobs_pb2.ListJobEventsRequest(job_id=job_id, after_seq=after,
                                                                               limit=limit),
                                                 timeout=self._timeout).events)

    # ---- market ---------------------------------------------------------------------------

    def market(self) -> jobs_pb2.MarketView:
        """What the market offers now: verified GPU classes, free slots, asks, queue, throughput."""
        with translate_rpc_error():
            return self._public.GetMarket(jobs_pb2.GetMarketRequest(), timeout=self._timeout)

    def quote(self, spec: JobSpec, *, requests: int = 0, prompt_tokens: int = 0, output_tokens: int = 0,
              deadline_s: int = 0) -> jobs_pb2.Quote:
        """What ``spec`` would cost and when it would finish (nothing is escrowed or submitted)."""
        with translate_rpc_error():
            return self._public.QuoteJob(jobs_pb2.QuoteJobRequest(
                spec=spec_to_proto(spec), requests=requests, prompt_tokens=prompt_tokens,
                output_tokens=output_tokens, deadline_s=deadline_s), timeout=self._timeout)

    def earnings(self, address: str = "") -> jobs_pb2.Earnings:
        """What a provider wallet earned here (``""``: this client's wallet): paid, pending, slashed."""
        with translate_rpc_error():
            stub = self._jobs if self._wallet is not None else self._public
            return stub.GetEarnings(jobs_pb2.GetEarningsRequest(address=address), timeout=self._timeout)

    def adapter(self, name: str) -> tuple[str, str]:
        """``(base model CID, adapter CID)`` of a fine-tuned model (``ft:...``) this wallet owns:
        run it by submitting the base model with ``adapter_cids=[adapter]`` and ``"adapter"`` on the lines."""
        for m in self.list_models():
            if m.name == name:
                if m.format != "lora":
                    raise InvalidArgument(f"{name} is a base model, not a fine-tune", field="model")
                return m.base, m.cid
        raise NotFound(f"no fine-tuned model named {name!r} of this wallet (gpumesh models list)", field="model")

    def model_cid(self, name_or_cid: str) -> str:
        """A model's CID: a CID as is, else the registry's for that name (NotFound if none)."""
        if _is_cid(name_or_cid):
            return name_or_cid
        for m in self.list_models():
            if m.name == name_or_cid:
                return m.cid
        raise NotFound(f"no model named {name_or_cid!r} (gpumesh models list)", field="model")

    def list_providers(self, *, connected_only: bool = False) -> list[jobs_pb2.ProviderInfo]:
        with translate_rpc_error():
            resp = self._public.ListProviders(
                jobs_pb2.ListProvidersRequest(connected_only=connected_only), timeout=self._timeout
            )
        return list(resp.providers)


def _is_cid(value: str) -> bool:
    from gpumesh.artifacts import parse_cid

    try:
        parse_cid(value)
    except InvalidArgument:
        return False
    return True


def _counted(chunks: Iterable[bytes], progress: Callable[[int], None]) -> Iterator[bytes]:
    done = 0
    for chunk in chunks:
        yield chunk
        done += len(chunk)
        progress(done)


def _read_chunks(path: Path, size: int = 1024 * 1024) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(size):
            yield chunk


class JobHandle:
    """A submitted job."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.id = job_id

    def __repr__(self) -> str:
        return f"JobHandle({self.id})"

    def status(self) -> JobStatus:
        return self.client.get_job(self.id)

    def watch(self, *, timeout: float | None = None) -> Iterator[JobStatus]:
        return self.client.watch(self.id, timeout=timeout)

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until terminal; raises JobFailed unless COMPLETED, TimeoutError after ``timeout``."""
        status = self.status()
        for status in self.watch(timeout=timeout):
            pass
        if status.state != "COMPLETED":
            raise JobFailed(f"job {self.id} {status.state}: {status.error}")
        return status

    def outputs(self) -> list[dict]:
        """The completed job's output records, in input order."""
        status = self.status()
        if status.state != "COMPLETED":
            raise JobFailed(f"job {self.id} is {status.state}, not COMPLETED")
        key = self.client.sealing_key.unwrap(status.raw.output_key) if status.raw.output_key else None
        data = self.client.download(status.output_cid, data_key=key)
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

    def finetune_output(self):
        """A completed fine-tune's output index (``gpumesh.checkpoints.FinetuneOutput``): the CIDs of
        its checkpoints, final adapter or model (a tar) and loss log."""
        from gpumesh.checkpoints import FinetuneOutput

        status = self.status()
        if status.state != "COMPLETED":
            raise JobFailed(f"job {self.id} is {status.state}, not COMPLETED")
        return FinetuneOutput.parse(self.client.download(status.output_cid))

    def cancel(self, reason: str = "") -> JobStatus:
        return self.client.cancel(self.id, reason)
