"""An OpenAI fine-tuning request -> the core's fine-tune parameters and its quote. Pure.

Hyperparameters are OpenAI's (``n_epochs``, ``batch_size``, ``learning_rate_multiplier``, each a
number or ``"auto"``), under ``method.supervised.hyperparameters`` or, as the older API had them,
at the top level; LoRA's rank and alpha are gpumesh's extension there (``lora_rank``,
``lora_alpha``). The run takes ``ceil(examples x epochs / batch_size)`` steps and checkpoints
once per epoch, each checkpoint a segment a verifier may replay.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from gpumesh.errors import InvalidArgument

BASE_LEARNING_RATE = 2e-4  # x learning_rate_multiplier: LoRA's customary rate
AUTO_EPOCHS = 3
MAX_EPOCHS = 50
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier", "lora_rank", "lora_alpha")


@dataclass(frozen=True)
class Plan:
    params: dict[str, Any]  # gpumesh.finetune.FinetuneParams
    hyperparameters: dict[str, Any]  # as OpenAI reports them (resolved "auto"s)
    steps: int
    trained_tokens: int  # tokens the run passes through, all epochs


def hyperparameters_of(body: dict[str, Any]) -> dict[str, Any]:
    method = body.get("method")
    hp: dict[str, Any] = dict(body.get("hyperparameters") or {})
    if method is not None:
        if not isinstance(method, dict) or method.get("type", "supervised") != "supervised":
            raise InvalidArgument('method.type must be "supervised" (dpo and reinforcement are not supported)',
                                  field="method.type")
        hp |= ((method.get("supervised") or {}).get("hyperparameters") or {})
    if extra := sorted(set(hp) - set(HYPERPARAMETERS)):
        raise InvalidArgument(f"unknown hyperparameter {extra[0]!r} (supported: {', '.join(HYPERPARAMETERS)})",
                              field=f"hyperparameters.{extra[0]}")
    return hp


def _value(hp: dict, key: str, auto: Any, kind: type, low: float, high: float) -> Any:
    value = hp.get(key, "auto")
    if value == "auto" or value is None:
        return auto
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise InvalidArgument(f'must be {"an integer" if kind is int else "a number"} or "auto"',
                              field=f"hyperparameters.{key}")
    if not low <= value <= high:
        raise InvalidArgument(f"must be from {low:g} to {high:g}", field=f"hyperparameters.{key}")
    return kind(value)


def plan(body: dict[str, Any], *, examples: int, tokens: list[int], context: int) -> Plan:
    """The fine-tune for ``examples`` lines of ``tokens`` tokens each (their longest bounds the sequence)."""
    hp = hyperparameters_of(body)
    epochs = _value(hp, "n_epochs", AUTO_EPOCHS, int, 1, MAX_EPOCHS)
    batch = _value(hp, "batch_size", max(1, min(8, examples)), int, 1, 256)
    lr_mult = _value(hp, "learning_rate_multiplier", 1.0, float, 1e-3, 1000.0)
    rank = _value(hp, "lora_rank", 8, int, 1, 256)
    alpha = _value(hp, "lora_alpha", 2.0 * rank, float, 0.01, 4096.0)
    per_epoch = math.ceil(examples / batch)
    steps = math.ceil(examples * epochs / batch)
    seed = body.get("seed")
    if seed is None:
        seed = 0
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise InvalidArgument("must be an integer from 0 to 2147483647", field="seed")
    longest = max(tokens) if tokens else 2
    params = {"method": "lora", "lora_r": rank, "lora_alpha": alpha, "learning_rate": BASE_LEARNING_RATE * lr_mult,
              "steps": steps, "batch_size": batch, "checkpoint_every": per_epoch,
              "max_seq_len": max(2, min(longest, context) if context else longest), "seed": seed}
    average = sum(tokens) / max(len(tokens), 1)
    trained = int(round(average * batch * steps))
    return Plan(params, {"n_epochs": epochs, "batch_size": batch, "learning_rate_multiplier": lr_mult,
                         "lora_rank": rank, "lora_alpha": alpha}, steps, trained)


def check_suffix(suffix: Any) -> str:
    if suffix is None or suffix == "":
        return ""
    if not isinstance(suffix, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", suffix):
        raise InvalidArgument("suffix: 1-64 letters, digits, - and _", field="suffix")
    return suffix


def model_name(base: str, suffix: str, ft_id: str) -> str:
    """OpenAI's ``ft:BASE:SUFFIX:ID`` (the suffix may be empty)."""
    return f"ft:{base}:{suffix}:{ft_id.removeprefix('ftjob-')}"


def quote(trained_tokens: int, *, price_per_hour: int, tokens_per_s: float, replay_share: float) -> dict[str, Any]:
    """What the run should cost and take at this price and speed; a check replays ``replay_share`` more."""
    seconds = trained_tokens / max(tokens_per_s, 1e-9)
    cost = int(price_per_hour * seconds * (1 + replay_share) / 3600)
    return {"trained_tokens": trained_tokens, "seconds": round(seconds, 1), "price_per_hour": str(price_per_hour),
            "cost": str(cost), "tokens_per_s": tokens_per_s}
