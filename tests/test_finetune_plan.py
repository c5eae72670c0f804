"""Pure parts of the fine-tuning API: chat examples' shape and tokens, hyperparameters to the
fine-tune's parameters, the quote and the model name."""

from __future__ import annotations

import json
import re

import pytest

from coordinator.finetunes.plan import model_name, plan, quote
from gpumesh.chatdata import ExampleError, LineError, chat_tokens, parse_example, parse_jsonl
from gpumesh.errors import InvalidArgument


def msgs(*pairs, **extra):
    return {"messages": [{"role": r, "content": c, **extra.get(str(i), {})} for i, (r, c) in enumerate(pairs)]}


def test_examples_need_known_roles_text_and_an_assistant_turn():
    turns = parse_example(msgs(("developer", "be brief"), ("user", "hi"), ("assistant", "hello")))
    assert [t.role for t in turns] == ["system", "user", "assistant"] and turns[2].trained
    for bad, why in [(msgs(("user", "hi")), "at least one assistant"),
                     (msgs(("wizard", "x"), ("assistant", "y")), "messages[0].role"),
                     (msgs(("user", ""), ("assistant", "y")), "messages[0].content"),
                     (msgs(("user", "x"), ("assistant", "y"), **{"1": {"weight": 0}}), "nothing to train on"),
                     (msgs(("user", "x"), ("assistant", "y"), **{"0": {"weight": 1}}), "assistant messages only"),
                     ({"messages": [], }, "non-empty"), ({"messages": [{"role": "user", "content": "x"}],
                                                         "tools": []}, "tool"),
                     ([1], "JSON object")]:
        with pytest.raises(ExampleError, match=re.escape(why)):
            parse_example(bad)
    data = (json.dumps(msgs(("user", "a"), ("assistant", "b"))) + "\n\n{oops\n").encode()
    with pytest.raises(LineError, match="line 3: invalid JSON") as e:
        parse_jsonl(data, max_lines=10)
    assert e.value.lineno == 3
    with pytest.raises(ExampleError, match="no examples"):
        parse_jsonl(b"\n", max_lines=10)


def test_only_trained_assistant_turns_are_labelled(tmp_path):
    from transformers import AutoTokenizer

    from provider_node.workloads.tiny import build_tiny_model

    tok = AutoTokenizer.from_pretrained(str(build_tiny_model(tmp_path / "m")))
    turns = parse_example(msgs(("user", "hi"), ("assistant", "yo"), ("user", "again"), ("assistant", "no"),
                               **{"1": {"weight": 0}}))
    ids, labels = chat_tokens(tok, turns)
    assert len(ids) == len(labels)
    trained = tok.decode([i for i, lb in zip(ids, labels) if lb != -100])
    assert "no" in trained and "yo" not in trained and "again" not in trained


def test_hyperparameters_become_steps_and_checkpoints_per_epoch():
    p = plan({"hyperparameters": {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 2}},
             examples=10, tokens=[20] * 10, context=2048)
    assert (p.steps, p.params["checkpoint_every"], p.params["batch_size"]) == (8, 3, 4)
    assert p.params["learning_rate"] == pytest.approx(4e-4) and p.params["max_seq_len"] == 20
    assert p.trained_tokens == 20 * 4 * 8
    auto = plan({"method": {"type": "supervised", "supervised": {"hyperparameters": {"lora_rank": 16}}}},
                examples=3, tokens=[5, 9, 7], context=0)
    assert auto.hyperparameters["n_epochs"] == 3 and auto.params["lora_r"] == 16 and auto.params["lora_alpha"] == 32
    for body, field in [({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
                        ({"hyperparameters": {"batch_size": 1.5}}, "hyperparameters.batch_size"),
                        ({"hyperparameters": {"beta": 1}}, "hyperparameters.beta"),
                        ({"method": {"type": "dpo"}}, "method.type"), ({"seed": -1}, "seed")]:
        with pytest.raises(InvalidArgument) as e:
            plan(body, examples=3, tokens=[5, 5, 5], context=0)
        assert e.value.field == field


def test_the_quote_and_the_model_name():
    q = quote(3600, price_per_hour=1000, tokens_per_s=1.0, replay_share=0.5)
    assert q["cost"] == "1500" and q["seconds"] == 3600
    assert model_name("org/base", "cats", "ftjob-abc") == "ft:org/base:cats:abc"
