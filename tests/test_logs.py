"""gpumesh.logs: JSON lines and text with fields, bound loggers, log contexts, env settings."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpumesh.errors import InvalidArgument
from gpumesh.logs import bind, configure_logging, log_context


@pytest.fixture(autouse=True)
def root_logger():
    """Each test configures the root logger; put it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def configured(fmt: str = "json", level: str = "debug") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(fmt, level, stream=stream, env={})
    return stream


def test_json_line_has_the_core_fields_and_extras():
    out = configured()
    logging.getLogger("coordinator.core").info("job %s queued", "job_1",
                                               extra={"job_id": "job_1", "tasks": 3, "ok": True})
    (line,) = json_lines(out)
    assert line["level"] == "INFO" and line["logger"] == "coordinator.core" and line["msg"] == "job job_1 queued"
    assert line["job_id"] == "job_1" and line["tasks"] == 3 and line["ok"] is True
    ts = dt.datetime.fromisoformat(line["ts"].replace("Z", "+00:00"))
    assert line["ts"].endswith("Z") and ts.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.timezone.utc) - ts).total_seconds()) < 60
    assert "exc" not in line and list(line)[:4] == ["ts", "level", "logger", "msg"]


def test_every_record_is_exactly_one_line_even_with_newlines():
    out = configured()
    log = logging.getLogger("t")
    log.warning("two\nlines", extra={"note": "a\nb"})
    log.error("second")
    lines = json_lines(out)
    assert [r["msg"] for r in lines] == ["two\nlines", "second"]
    assert lines[0]["note"] == "a\nb" and len(out.getvalue().splitlines()) == 2


def test_exception_info_is_a_string_with_the_traceback():
    out = configured()
    try:
        raise ValueError("bad shard 7")
    except ValueError:
        logging.getLogger("t").exception("task failed", extra={"task_id": "job_1-t00007"})
    (line,) = json_lines(out)
    assert line["level"] == "ERROR" and line["task_id"] == "job_1-t00007"
    assert isinstance(line["exc"], str)
    assert line["exc"].startswith("Traceback") and "ValueError: bad shard 7" in line["exc"]


def test_stack_info_is_kept():
    out = configured()
    logging.getLogger("t").info("where", stack_info=True)
    (line,) = json_lines(out)
    assert "test_stack_info_is_kept" in line["stack"]


class Color(enum.Enum):
    RED = "red"


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_values_json_cannot_encode_never_break_a_line():
    out = configured()
    loop: dict = {}
    loop["self"] = loop
    logging.getLogger("t").info("odd values", extra={
        "path": Path("/tmp/x"), "when": dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc),
        "blob": b"\x01\xff", "ids": {"b", "a"}, "obj": object(), "nan": float("nan"), "inf": float("inf"),
        "loop": loop, "color": Color.RED, "mixed": [1, object()], "broken": Unprintable(), "n": None,
    })
    (line,) = json_lines(out)
    assert line["path"] == "/tmp/x" and line["when"] == "2024-05-01T12:00:00+00:00"
    assert line["blob"] == "01ff" and line["ids"] == ["a", "b"] and line["color"] == "red"
    assert line["obj"].startswith("<object object at") and line["nan"] == "nan" and line["inf"] == "inf"
    assert isinstance(line["loop"], str) and "..." in line["loop"]  # repr of a self-referencing dict
    assert line["mixed"][0] == 1 and line["mixed"][1].startswith("<object")
    assert line["broken"] == "<unrepresentable Unprintable: RuntimeError>" and line["n"] is None


def test_wrong_format_arguments_still_log_the_message(root_logger):
    out = configured()
    theirs = [h for h in root_logger.handlers if not getattr(h, "_gpumesh", False)]
    for h in theirs:  # pytest's capture handlers raise on a record they cannot format
        root_logger.removeHandler(h)
    try:
        logging.getLogger("t").info("needs %d and %d", 1)
    finally:
        for h in theirs:
            root_logger.addHandler(h)
    (line,) = json_lines(out)
    assert "needs %d and %d" in line["msg"] and "(1,)" in line["msg"]


def test_an_extra_named_like_a_core_key_does_not_replace_it():
    out = configured()
    logging.getLogger("t").info("hello", extra={"ts": "mine", "level": 9, "exc": "x"})
    (line,) = json_lines(out)
    assert line["level"] == "INFO" and line["ts"] != "mine"
    assert line["ts_"] == "mine" and line["level_"] == 9 and line["exc_"] == "x"


def test_text_format_appends_fields_as_key_value():
    out = configured("text")
    logging.getLogger("provider_node.daemon").info(
        "leased task %s", "job_1-t00000",
        extra={"task_id": "job_1-t00000", "lease_id": "ab12", "reason": "no slot free", "n": 2, "empty": ""})
    (text,) = out.getvalue().splitlines()
    head, _, tail = text.partition(" INFO provider_node.daemon: ")
    dt.datetime.strptime(head, "%Y-%m-%d %H:%M:%S,%f")
    assert tail == 'leased task job_1-t00000 task_id=job_1-t00000 lease_id=ab12 reason="no slot free" n=2 empty=""'


def test_text_format_traceback_follows_the_line():
    out = configured("text")
    try:
        {}["missing"]
    except KeyError:
        logging.getLogger("t").error("lookup failed", exc_info=True, extra={"job_id": "j"})
    first, *rest = out.getvalue().splitlines()
    assert first.endswith("t: lookup failed job_id=j")
    assert rest[0].startswith("Traceback") and rest[-1] == "KeyError: 'missing'"


def test_level_filters_records():
    out = configured(level="warning")
    log = logging.getLogger("t")
    log.info("hidden")
    log.debug("hidden too")
    log.warning("shown")
    assert [r["msg"] for r in json_lines(out)] == ["shown"]


def test_bind_attaches_fields_and_the_call_can_add_or_override():
    out = configured()
    log = bind(logging.getLogger("coordinator.core"), job_id="job_1", provider_id="prov_a")
    task_log = log.bind(task_id="job_1-t00002")
    log.info("first")
    task_log.info("second", extra={"provider_id": "prov_b", "attempt": 2})
    first, second = json_lines(out)
    assert first["job_id"] == "job_1" and first["provider_id"] == "prov_a" and "task_id" not in first
    assert second == {**second, "job_id": "job_1", "task_id": "job_1-t00002", "provider_id": "prov_b", "attempt": 2}
    assert first["logger"] == second["logger"] == "coordinator.core"
    assert "task_id" not in log.extra  # binding more made a new logger


def test_bind_refuses_record_attribute_names():
    with pytest.raises(InvalidArgument, match="msg"):
        bind(logging.getLogger("t"), msg="x")
    with pytest.raises(InvalidArgument, match="name"):
        with log_context(name="x"):
            pass


def test_log_context_is_per_asyncio_task_and_nests():
    out = configured()
    log = logging.getLogger("provider_node.daemon")

    async def lease(n: int) -> None:
        with log_context(lease_id=f"lease{n}", task_id=f"t{n}"):
            await asyncio.sleep(0.01 * (3 - n))  # interleave the tasks
            log.info("running")
            with log_context(stage="upload"):
                log.info("uploading", extra={"task_id": "explicit"})
        log.info("after")

    async def main() -> None:
        with log_context(provider_id="prov_x"):
            await asyncio.gather(*(lease(n) for n in range(3)))

    asyncio.run(main())
    lines = json_lines(out)
    running = {r["lease_id"]: r for r in lines if r["msg"] == "running"}
    assert sorted(running) == ["lease0", "lease1", "lease2"]
    assert all(r["task_id"] == "t" + k[-1] and r["provider_id"] == "prov_x" for k, r in running.items())
    uploading = [r for r in lines if r["msg"] == "uploading"]
    assert len(uploading) == 3 and all(r["stage"] == "upload" and r["task_id"] == "explicit" for r in uploading)
    after = [r for r in lines if r["msg"] == "after"]
    assert len(after) == 3 and all("lease_id" not in r and r["provider_id"] == "prov_x" for r in after)
    log.info("outside")
    assert "provider_id" not in json_lines(out)[-1]


def test_env_chooses_format_and_level():
    stream = io.StringIO()
    configure_logging(stream=stream, env={"GPUMESH_LOG_FORMAT": "JSON", "GPUMESH_LOG_LEVEL": "warn"})
    logging.getLogger("t").info("hidden")
    logging.getLogger("t").warning("shown")
    assert [r["msg"] for r in json_lines(stream)] == ["shown"]
    stream = io.StringIO()
    configure_logging(stream=stream, env={})  # defaults: text at info
    logging.getLogger("t").info("plain")
    assert stream.getvalue().rstrip().endswith(" INFO t: plain")


def test_arguments_win_over_env():
    stream = io.StringIO()
    configure_logging("text", "debug", stream=stream, env={"GPUMESH_LOG_FORMAT": "json", "GPUMESH_LOG_LEVEL": "error"})
    logging.getLogger("t").debug("dbg")
    assert stream.getvalue().rstrip().endswith(" DEBUG t: dbg")


def test_unknown_format_or_level_is_a_clear_error():
    with pytest.raises(InvalidArgument, match="log_format: unknown log format 'xml'"):
        configure_logging("xml", env={})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="log_level: unknown log level 'loud'"):
        configure_logging("json", env={"GPUMESH_LOG_LEVEL": "loud"})


def test_configuring_again_replaces_its_handler_only(root_logger):
    other = logging.StreamHandler(io.StringIO())
    root_logger.addHandler(other)
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "info", stream=first, env={})
    configure_logging("json", "info", stream=second, env={})
    logging.getLogger("t").info("once")
    assert first.getvalue() == "" and [r["msg"] for r in json_lines(second)] == ["once"]
    assert other in root_logger.handlers
    root_logger.removeHandler(other)


def test_a_real_process_logs_json_lines_from_env(tmp_path):
    script = (
        "import logging\n"
        "from gpumesh.logs import bind, configure_logging\n"
        "configure_logging()\n"
        "log = bind(logging.getLogger('coordinator.core'), job_id='job_9')\n"
        "log.debug('hidden')\n"
        "log.info('job %s completed', 'job_9', extra={'output_cid': 'bafy'})\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    log.exception('finalize failed')\n"
    )
    env = {**os.environ, "GPUMESH_LOG_FORMAT": "json", "GPUMESH_LOG_LEVEL": "INFO"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [r["msg"] for r in lines] == ["job job_9 completed", "finalize failed"]
    assert lines[0]["output_cid"] == "bafy" and all(r["job_id"] == "job_9" for r in lines)
    assert "ZeroDivisionError: division by zero" in lines[1]["exc"] and proc.stdout == ""


def test_a_coordinator_process_logs_json_lines_with_the_job_id(tmp_path):
    """`coordinator serve` under GPUMESH_LOG_FORMAT=json: every line parses, and the job's own
    lines carry its id as a field."""
    from gpumesh.client import Client
    from gpumesh.jobspec import JobSpec
    from gpumesh.localnet import LocalNetwork

    with LocalNetwork(tmp_path / "net") as net:
        net.start_coordinator({"GPUMESH_LOG_FORMAT": "json"})
        with Client.connect(net.target) as client:
            job = client.submit(JobSpec(name="logged", model_cid=client.upload(b"m"),
                                        input_cid=client.upload(b'{"prompt": "p"}\n')))
            client.cancel(job.id)
        net.coordinator.stop()
        lines = [line for line in net.coordinator.log_tail(1_000_000).splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # nothing but JSON lines
    queued = [r for r in records if r.get("job_id") == job.id and "queued" in r["msg"]]
    assert queued and queued[0]["level"] == "INFO" and queued[0]["logger"] == "coordinator.core"
    assert queued[0]["submitter"] == client.wallet.address and queued[0]["ts"].endswith("Z")
