"""The OpenAI-compatible Batch API against the native SDK, in one run, on one local network.

* throughput: the same ``--lines`` chat requests (greedy, ``--max-tokens`` each) run as an OpenAI
  batch (the official ``openai`` client: upload, create, poll, download the output file) and as a
  native job (``gpumesh.Client``: upload the request lines, submit, wait, download the outputs),
  alternately, ``--repeats`` times each; medians and their ratio (target <= 1.05). Verification
  is off (one execution per line) and the chain too: what is measured is the API's own cost.
* memory: the coordinator's peak RSS (VmHWM) while a ``--upload-mb`` file is uploaded through
  ``/v1/files``, above its RSS when idle (target < 200 MB).

    python bench/openai_batch.py                       # 1000 lines, 200 MB upload
    python bench/openai_batch.py --lines 200 --upload-mb 50 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

MODEL = "gpumesh/tiny-llama"


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _lines(n: int, max_tokens: int, tag: str) -> list[dict]:
    return [{"custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": MODEL, "messages": [{"role": "user", "content": f"{tag} request {i}"}],
                      "max_tokens": max_tokens, "temperature": 0}} for i in range(n)]


def run_openai(oc, lines: list[dict]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    f = oc.files.create(file=("batch.jsonl", data), purpose="batch")
    batch = oc.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.1)
        batch = oc.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts.failed == 0, batch
    out = [json.loads(x) for x in oc.files.content(batch.output_file_id).text.splitlines()]
    took = time.perf_counter() - started
    by_id = {r["custom_id"]: r["response"]["body"]["choices"][0]["message"]["content"] for r in out}
    return took, [by_id[x["custom_id"]] for x in lines]


def run_native(client, lines: list[dict], model_cid: str) -> tuple[float, list[str]]:
    from gpumesh.jobspec import JobSpec

    started = time.perf_counter()
    native = [{"id": x["custom_id"], "messages": x["body"]["messages"], "max_new_tokens": x["body"]["max_tokens"],
               "temperature": 0} for x in lines]
    cid = client.upload("".join(json.dumps(x) + "\n" for x in native).encode())
    handle = client.submit(JobSpec(name="native", model_cid=model_cid, input_cid=cid))
    status = handle.wait(timeout=3600)
    assert status.state == "COMPLETED", status
    by_id = {r["id"]: r["completion"] for r in handle.outputs()}
    return time.perf_counter() - started, [by_id[x["custom_id"]] for x in lines]


def upload_rss(oc, pid: int, mb: int, root: Path) -> tuple[int, int, float]:
    """(idle RSS, peak RSS) in KiB of the coordinator around a ``mb`` MB upload; seconds taken."""
    path = root / "big.jsonl"
    line = (json.dumps(_lines(1, 8, "x" * 200)[0]) + "\n").encode()
    with open(path, "wb") as fh:
        for _ in range(mb * 2**20 // len(line)):
            fh.write(line)
    time.sleep(1)
    idle = _rss_kb(pid, "VmRSS")
    peak_before = _rss_kb(pid, "VmHWM")
    started = time.perf_counter()
    with open(path, "rb") as fh:
        f = oc.files.create(file=("big.jsonl", fh), purpose="batch")
    took = time.perf_counter() - started
    assert f.bytes == path.stat().st_size, f
    return idle, max(_rss_kb(pid, "VmHWM"), peak_before), took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=1000)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--providers", type=int, default=2)
    p.add_argument("--upload-mb", type=int, default=200)
    args = p.parse_args()

    import openai

    from gpumesh.client import Client
    from gpumesh.localnet import LocalNetwork, free_port
    from provider_node.workloads.tiny import tiny_model_archive

    from gpumesh.identity import Wallet

    root = Path(tempfile.mkdtemp(prefix="gpumesh-bench-openai-"))
    wallet = Wallet.generate()  # the submitter, allowed to name the model
    port = free_port()
    threads = max(1, (os.cpu_count() or 2) // args.providers)
    with LocalNetwork(root, lease_ttl_s=30, heartbeat_interval_s=1) as net:
        net.start_coordinator({"GPUMESH_COORDINATOR_VERIFY": "false",
                               "GPUMESH_COORDINATOR_OPENAI_LISTEN": f"127.0.0.1:{port}",
                               "GPUMESH_COORDINATOR_RATE_LIMITS__OPENAI_PER_S": "0",
                               "GPUMESH_COORDINATOR_MODEL_REGISTRARS": json.dumps([wallet.address]),
                               "GPUMESH_COORDINATOR_MAX_PROMPTS_PER_JOB": str(max(args.lines, 1000))})
        for i in range(args.providers):
            net.start_provider(f"p{i}", threads=threads)
        net.wait_providers(args.providers)
        with Client.connect(net.target, wallet=wallet) as client:
            entry = client.add_model(MODEL, tiny_model_archive())
            oc = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=client.create_api_key().key,
                               max_retries=0, timeout=600)
            run_openai(oc, _lines(32, args.max_tokens, "warm"))  # model caches filled, both paths
            run_native(client, _lines(32, args.max_tokens, "warm2"), entry.cid)
            api, native = [], []
            for r in range(args.repeats):
                lines = _lines(args.lines, args.max_tokens, f"r{r}")
                if r % 2 == 0:  # alternate which goes first: neither gets the warmer machine every time
                    t_api, out_api = run_openai(oc, lines)
                    t_native, out_native = run_native(client, lines, entry.cid)
                else:
                    t_native, out_native = run_native(client, lines, entry.cid)
                    t_api, out_api = run_openai(oc, lines)
                assert out_api == out_native, "the two paths disagree on greedy outputs"
                api.append(t_api)
                native.append(t_native)
                print(f"round {r}: openai {t_api:.2f}s  native {t_native:.2f}s  ({args.lines} lines, identical)")
            ratio = statistics.median(api) / statistics.median(native)
            print(f"openai batch / native SDK: median {statistics.median(api):.2f}s / {statistics.median(native):.2f}s "
                  f"= {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")
            if args.upload_mb:
                idle, peak, took = upload_rss(oc, net.coordinator.popen.pid, args.upload_mb, root)
                extra = (peak - idle) / 1024
                print(f"upload {args.upload_mb} MB through /v1/files in {took:.1f}s ({args.upload_mb / took:.0f} MB/s): "
                      f"coordinator RSS idle {idle / 1024:.0f} MB, peak {peak / 1024:.0f} MB, +{extra:.0f} MB "
                      f"(target < 200 MB: {'met' if extra < 200 else 'NOT met'})")


if __name__ == "__main__":
    main()
