import json

import pytest

from coordinator.splitter import parse_prompts, split
from gpumesh.errors import InvalidArgument, ResourceExhausted


def jsonl(*records):
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def test_split_keeps_order_assigns_global_ids_and_preserves_given_ids():
    records = parse_prompts(jsonl(*({"prompt": f"p{i}"} for i in range(5)), {"prompt": "x", "id": "mine"}),
                            max_prompts=100, max_prompt_bytes=100)
    shards = split(records, 4)
    assert [s.prompts for s in shards] == [4, 2]
    lines = [json.loads(line) for s in shards for line in s.data.decode().splitlines()]
    assert [r["id"] for r in lines] == [0, 1, 2, 3, 4, "mine"]
    assert [r["prompt"] for r in lines][:2] == ["p0", "p1"]


@pytest.mark.parametrize(
    "data, message",
    [
        (b'{"prompt": "ok"}\nnot json\n', "input line 2: invalid JSON"),
        (b'{"prompt": "ok"}\n[1, 2]\n', "input line 2: expected a JSON object"),
        (b'{"text": "no prompt"}\n', 'input line 1: unsupported parameter "text"'),
        (b'{"id": 1}\n', 'input line 1: "prompt" must be a non-empty string (or give "messages")'),
        (b'{"prompt": "x", "temperature": 5}\n', 'input line 1: "temperature": Input should be less than or equal to 2'),
        (b'{"prompt": "x", "top_logprobs": 2}\n', 'input line 1: "top_logprobs" needs "logprobs": true'),
        (b'{"messages": [{"role": "robot", "content": "x"}]}\n', 'input line 1: "messages.0.role"'),
        (b'{"prompt": "x", "response_format": {"type": "json_schema"}}\n', '"schema" is required'),
        (b'\n\n', "input has no prompts"),
        (b'\xff\xfe', "not UTF-8"),
    ],
)
def test_bad_input_names_the_line(data, message):
    with pytest.raises(InvalidArgument) as err:
        parse_prompts(data, max_prompts=10, max_prompt_bytes=100)
    assert message in str(err.value)
    assert err.value.field == "spec.input_cid"


def test_limits_are_resource_exhausted():
    with pytest.raises(ResourceExhausted, match="more than 2 prompts"):
        parse_prompts(jsonl(*({"prompt": "p"} for _ in range(3))), max_prompts=2, max_prompt_bytes=100)
    with pytest.raises(ResourceExhausted, match="line 1: prompt is over 10 bytes"):
        parse_prompts(jsonl({"prompt": "x" * 11}), max_prompts=2, max_prompt_bytes=10)
