"""The OpenAI batch file -> request lines translation, and the output/error files (pure)."""

from __future__ import annotations

import json

import pytest

from coordinator.batches.results import Evidence, Undelivered, build_files
from coordinator.batches.translate import BatchInvalid, derived_seed, translate

CHAT = "/v1/chat/completions"


def line(cid, body=None, url=CHAT, **extra) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]} if body is None else body
    return json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body, **extra})


def run(*lines: str, endpoint: str = CHAT, models=("m",)):
    def resolve(name):
        if name not in models:
            raise LookupError(f"The model `{name}` does not exist")
        return name

    return translate(("\n".join(lines) + "\n").encode(), endpoint=endpoint, batch_id="batch_x", max_lines=100,
                     resolve_model=resolve)


def test_chat_parameters_become_request_line_settings():
    body = {"model": "m", "messages": [{"role": "system", "content": "brief"},
                                       {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                    {"type": "text", "text": "b"}]},
                                       {"role": "assistant", "content": "ok"}, {"role": "developer", "content": "d"}],
            "max_completion_tokens": 12, "temperature": 0.7, "top_p": 0.9, "seed": 5, "stop": "\n", "n": 2,
            "logprobs": True, "top_logprobs": 3, "user": "u1", "stream": False,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}
    tr = run(line("a", body))
    assert not tr.errors and tr.model == "m"
    [req] = tr.requests
    assert (req.custom_id, req.n, req.seeds, req.logprobs) == ("a", 2, (5, 6), "chat")
    first, second = tr.lines
    assert first["messages"][1] == {"role": "user", "content": "ab"} and first["messages"][3]["role"] == "system"
    assert first["prompt"] == json.dumps(first["messages"], separators=(",", ":"))
    assert (first["max_new_tokens"], first["temperature"], first["top_p"], first["stop"]) == (12, 0.7, 0.9, ["\n"])
    assert (first["logprobs"], first["top_logprobs"]) == (True, 3)
    assert first["response_format"] == {"type": "json_schema", "schema": {"type": "object"}}
    assert (first["id"], second["id"], first["seed"], second["seed"]) == ([1, 0], [1, 1], 5, 6)


def test_defaults_follow_openai_and_unseeded_sampling_gets_a_fixed_seed():
    tr = run(line("a"), line("b", {"model": "m", "prompt": "p"}, url="/v1/completions"), endpoint=CHAT)
    assert tr.lines[0]["temperature"] == 1.0 and tr.lines[0]["max_new_tokens"] == 256
    assert tr.lines[0]["seed"] == derived_seed("batch_x", "a", 0) == run(line("a")).lines[0]["seed"]
    greedy = run(line("g", {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0}))
    assert "seed" not in greedy.lines[0] and greedy.requests[0].seeds == ()
    assert tr.errors[0].param == "url" and "differs from the batch's endpoint" in tr.errors[0].message
    comp = run(line("c", {"model": "m", "prompt": ["p"], "logprobs": 2}, url="/v1/completions"),
               endpoint="/v1/completions")
    assert comp.lines[0]["max_new_tokens"] == 16 and comp.lines[0]["top_logprobs"] == 2
    assert comp.requests[0].logprobs == "completions"


@pytest.mark.parametrize("body, param, words", [
    ({"frequency_penalty": 0.5}, "frequency_penalty", "not supported"),
    ({"tools": [{"type": "function"}]}, "tools", "not supported"),
    ({"logit_bias": {"1": 2}}, "logit_bias", "not supported"),
    ({"top_k": 5}, "top_k", 'unsupported parameter "top_k"'),
    ({"temperature": 3}, "temperature", "from 0 to 2"),
    ({"n": 9}, "n", "from 1 to 8"),
    ({"max_tokens": 0}, "max_tokens", "from 1 to 4096"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "up to 4"),
    ({"top_logprobs": 2}, "top_logprobs", 'needs "logprobs": true'),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages", "is not supported"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages", "only text parts"),
    ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages", "messages[0].name"),
    ({"response_format": {"type": "yaml"}}, "response_format", "text, json_object or json_schema"),
    ({"seed": -1}, "seed", "integer from 0"),
])
def test_a_parameter_we_cannot_honour_is_that_lines_400_naming_it(body, param, words):
    full = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    tr = run(line("ok"), line("bad", full))
    assert [r.custom_id for r in tr.requests] == ["ok"]
    [err] = tr.errors
    assert (err.line, err.custom_id, err.param, err.status_code) == (2, "bad", param, 400)
    assert words in err.message and err.message.startswith("line 2: ")


def test_malformed_lines_go_to_the_error_file_with_their_line_numbers():
    tr = run(line("a"), "{not json", json.dumps({"method": "POST", "url": CHAT, "body": {}}),
             line("b", url="/v1/nope"), line("c", method="GET"), line("d", {"model": "other", "messages": []}),
             line("e", {"model": "m2", "messages": [{"role": "user", "content": "x"}]}))
    assert [r.custom_id for r in tr.requests] == ["a"]
    got = {e.line: (e.custom_id, e.code, e.param) for e in tr.errors}
    assert got[2] == (None, "invalid_json", None) and got[3] == (None, "missing_custom_id", "custom_id")
    assert got[4][2] == "url" and got[5][2] == "method" and got[6][2] == "messages"
    assert got[7] == ("e", "model_not_found", "model")
    many = run(line("a"), line("b", {"model": "m", "messages": [{"role": "user", "content": "x"}]}),
               models=("m", "m2"))
    assert len(many.requests) == 2
    two = run(line("a"), line("b", {"model": "m2", "messages": [{"role": "user", "content": "x"}]}), models=("m", "m2"))
    assert two.errors[0].param == "model" and "one batch serves one base model" in two.errors[0].message


@pytest.mark.parametrize("data, code", [
    (b"", "empty_file"), (b"\n\n", "empty_file"), (b"\xff\xfe", "invalid_file"),
])
def test_files_that_fail_the_whole_batch(data, code):
    with pytest.raises(BatchInvalid) as err:
        translate(data, endpoint=CHAT, batch_id="b", max_lines=10)
    assert err.value.errors[0]["code"] == code


def test_duplicate_custom_ids_fail_validation_naming_both_lines():
    with pytest.raises(BatchInvalid) as err:
        run(line("a"), line("b"), line("a"))
    [e] = err.value.errors
    assert (e["code"], e["line"], e["param"]) == ("duplicate_custom_id", 3, "custom_id") and "line 1" in e["message"]
    with pytest.raises(BatchInvalid, match="over this coordinator's limit"):
        translate(("\n".join(line(str(i)) for i in range(11))).encode(), endpoint=CHAT, batch_id="b", max_lines=10)


def test_output_and_error_files_have_one_line_per_input_line():
    tr = run(line("a", {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2, "logprobs": True}),
             line("b"), line("c", {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_k": 1}))
    ev = Evidence("0xabc", "job-t00000", "replica", "verified", "bafy", "ff", 10)
    rec = {"prompt_tokens": 5, "completion_tokens": 3, "completion": "hey", "finish_reason": "length",
           "logprobs": [{"token": "h", "logprob": -0.1, "bytes": [104], "top_logprobs": []}]}
    files = build_files("batch_x", "m", 7, tr.requests, tr.errors, {(1, 0): (rec, ev), (1, 1): (rec, ev)},
                        lambda n: Undelivered("batch_cancelled", f"line {n} never ran"))
    out = [json.loads(x) for x in files.output.splitlines()]
    err = [json.loads(x) for x in files.errors.splitlines()]
    assert (files.completed, files.failed, files.cost) == (1, 2, 20)
    [a] = out
    body = a["response"]["body"]
    assert a["custom_id"] == "a" and a["response"]["status_code"] == 200 and a["error"] is None
    assert [c["index"] for c in body["choices"]] == [0, 1] and body["choices"][0]["message"]["content"] == "hey"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    assert body["choices"][0]["logprobs"]["content"][0]["logprob"] == -0.1
    assert body["gpumesh"]["check"] == "replica" and body["gpumesh"]["cost"] == "20"
    assert [e["custom_id"] for e in err] == ["b", "c"]
    assert err[0]["error"]["code"] == "batch_cancelled" and err[0]["response"] is None
    assert err[1]["response"]["status_code"] == 400 and err[1]["response"]["body"]["error"]["param"] == "top_k"


def test_embeddings_requests_take_texts_and_refuse_what_they_cannot_honour():
    emb = "/v1/embeddings"
    tr = run(line("a", {"model": "m", "input": ["x", "y"], "encoding_format": "base64"}, url=emb),
             line("b", {"model": "m", "input": [1, 2]}, url=emb),
             line("c", {"model": "m", "input": "z", "dimensions": 4}, url=emb),
             line("d", {"model": "m", "input": "z", "encoding_format": "int8"}, url=emb), endpoint=emb)
    [req] = tr.requests
    assert (req.n, req.encoding_format) == (2, "base64")
    assert tr.lines == [{"id": [1, 0], "prompt": "x"}, {"id": [1, 1], "prompt": "y"}]
    assert [e.param for e in tr.errors] == ["input", "dimensions", "encoding_format"]
    ev = Evidence("0xabc", "t", "replica", "verified", "bafy", "ff", 4)
    files = build_files("batch_x", "m", 1, tr.requests, [], {(1, k): ({"prompt_tokens": 2, "embedding": [0.5, -0.5]}, ev)
                                                              for k in range(2)}, lambda n: None)
    body = json.loads(files.output)["response"]["body"]
    import base64
    import struct

    assert struct.unpack("<2f", base64.b64decode(body["data"][1]["embedding"])) == (0.5, -0.5)
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}


def test_embedding_checks_compare_by_cosine_and_the_referee_sides_with_the_truth():
    from coordinator.verification.embeddings import compare_embeddings, read_embed_referee

    def out(*vecs):
        return "".join(json.dumps({"id": i, "prompt": "p", "embedding": v}) + "\n" for i, v in enumerate(vecs)).encode()

    truth = out([1.0, 0.0], [0.0, 1.0])
    noisy = out([1.0, 1e-4], [1e-4, 1.0])  # float noise
    wrong = out([1.0, 0.0], [1.0, 0.0])  # one vector copied
    assert compare_embeddings(truth, noisy).agree
    bad = compare_embeddings(truth, wrong)
    assert not bad.agree and bad.mismatched_ids == (1,)
    assert not compare_embeddings(truth, out([1.0, 0.0])).agree  # a record missing
    assert not compare_embeddings(truth, b'{"id": 0, "embedding": [NaN, 1]}\n').agree
    reading = read_embed_referee(wrong, noisy, truth)
    assert (reading.primary_valid, reading.checker_valid) == (False, True)
    assert read_embed_referee(noisy, None, truth).checker_valid is False


def test_fine_tunes_of_the_batch_base_share_it_each_line_with_its_adapter():
    adapter = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    served = {"m": ("m", None), "ft:m:a:1": ("m", adapter), "ft:other:b:2": ("other", adapter)}

    def resolve(name):
        if name not in served:
            raise LookupError(f"The model `{name}` does not exist")
        return served[name]

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    data = "".join(x + "\n" for x in (
        line("base", body), line("tuned", {**body, "model": "ft:m:a:1"}),
        line("foreign", {**body, "model": "ft:other:b:2"}))).encode()
    tr = translate(data, endpoint=CHAT, batch_id="batch_x", max_lines=10, resolve_model=resolve)
    assert tr.model == "m" and list(tr.adapters) == [adapter]
    assert [x.get("adapter") for x in tr.lines] == [None, adapter]
    assert [(r.custom_id, r.model, r.adapter) for r in tr.requests] == [("base", "", ""),
                                                                         ("tuned", "ft:m:a:1", adapter)]
    assert tr.errors[0].custom_id == "foreign" and "one base model" in tr.errors[0].message
    emb = translate((line("e", {"model": "ft:m:a:1", "input": "x"}, url="/v1/embeddings") + "\n").encode(),
                    endpoint="/v1/embeddings", batch_id="b", max_lines=10, resolve_model=resolve)
    assert not emb.requests and "serves completions, not embeddings" in emb.errors[0].message
