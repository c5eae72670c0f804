"""The CLI against a real coordinator socket (no providers needed for these paths)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gpumesh.artifacts import cid_of_bytes
from gpumesh.cli.main import main
from gpumesh.errors import InvalidArgument
from gpumesh.jobfile import load_job_file


@pytest.fixture
def run(server, tmp_path):
    # One submitter key for the commands of a test (the default would be ~/.gpumesh/submitter.key).
    runner = CliRunner(env={"GPUMESH_KEY_FILE": str(tmp_path / "submitter.key")})

    def invoke(*args: str):
        return runner.invoke(main, [*args, "--coordinator", server.target], catch_exceptions=False)

    return invoke


def test_artifacts_put_prints_the_kubo_cid_and_get_round_trips(run, tmp_path):
    src = tmp_path / "data.bin"
    src.write_bytes(b"hello world\n")
    result = run("artifacts", "put", str(src))
    assert result.exit_code == 0
    assert result.output.strip() == "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    out = tmp_path / "back.bin"
    assert run("artifacts", "get", result.output.strip(), "-o", str(out)).exit_code == 0
    assert out.read_bytes() == b"hello world\n"


def test_submit_uploads_local_files_and_jobs_get_shows_them(run, tmp_path):
    (tmp_path / "model.bin").write_bytes(b"weights")
    (tmp_path / "in.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"}\n')
    (tmp_path / "job.yaml").write_text(
        "name: cli\nkind: inference\nmodel: model.bin\ninput: in.jsonl\nshard_size: 2\n"
        "requirements: {gpu_count: 0, gpu_models: []}\ninference: {max_new_tokens: 4}\n"
    )
    result = run("submit", str(tmp_path / "job.yaml"), "--no-watch")
    assert result.exit_code == 0, result.output
    job_id = result.output.split()[-1]
    shown = json.loads(run("jobs", "get", job_id).output)
    assert shown["spec"]["model_cid"] == cid_of_bytes(b"weights")
    assert shown["tasks_total"] == 2 and shown["state"] == "JOB_STATE_QUEUED"
    assert run("jobs", "cancel", job_id).output.strip() == "CANCELLED"
    assert "providers" in run("providers", "list").output


def test_a_sealed_job_file_encrypts_its_input_and_another_key_cannot_read_the_job(run, server, tmp_path):
    from gpumesh.sealing import is_sealed

    (tmp_path / "in.jsonl").write_text('{"prompt": "private"}\n')
    (tmp_path / "job.yaml").write_text("model: bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4\n"
                                       "input: in.jsonl\nseal: true\n")
    (tmp_path / "m.bin").write_bytes(b"hello world\n")  # the model CID above
    run("artifacts", "put", str(tmp_path / "m.bin"))
    result = run("submit", str(tmp_path / "job.yaml"), "--no-watch")
    assert result.exit_code == 0, result.output
    job_id = result.output.split()[-1]
    shown = json.loads(run("jobs", "get", job_id).output)
    assert shown["spec"]["output_sealing_key"]  # its outputs will be sealed to this submitter
    assert is_sealed(server.core.raw_artifacts.get_bytes(shown["spec"]["input_cid"]))
    other = CliRunner(env={"GPUMESH_KEY_FILE": str(tmp_path / "other.key")}).invoke(
        main, ["jobs", "get", job_id, "--coordinator", server.target])
    assert other.exit_code == 1 and "PermissionDenied" in other.output


def test_errors_are_one_clear_line(run, tmp_path):
    result = run("jobs", "get", "job_missing")
    assert result.exit_code == 1
    assert result.output.strip() == "error: NotFound: job_id: job 'job_missing' not found"


def test_job_file_validation_names_the_field(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("model: bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4\n"
                    "input: bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4\nshard_size: 0\n")
    with pytest.raises(InvalidArgument) as err:
        load_job_file(path, upload=lambda p: pytest.fail("nothing to upload"))
    assert err.value.field == "spec.shard_size"
    path.write_text("model: ./missing.gguf\ninput: x\n")
    with pytest.raises(InvalidArgument) as err:
        load_job_file(path, upload=lambda p: pytest.fail("nothing to upload"))
    assert err.value.field == "spec.model_cid"
