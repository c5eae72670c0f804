"""Inference engines: vLLM on a GPU when installed, transformers/torch everywhere else.

Greedy decoding (``temperature=0``) is deterministic; verification relies on that. torch,
transformers and vllm are imported only when an engine is built.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field

from gpumesh.errors import WorkloadError
from provider_node.workloads.common import WorkloadParams
from provider_node.workloads.models import detect_format, load_causal_lm

EngineName = Literal["transformers", "vllm"]
MAX_NEW_TOKENS = 4096


class GenerationParams(WorkloadParams):
    """Decoding settings for one task (the task's ``params_json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    max_new_tokens: int = Field(32, ge=1, le=MAX_NEW_TOKENS)
    batch_size: int = Field(8, ge=1, le=1024)
    chat: bool = False  # wrap each prompt as a user message in the model's chat template
    temperature: float = Field(0.0, ge=0.0, le=100.0)  # 0 = greedy (deterministic)
    seed: int = Field(0, ge=0, lt=2**63)  # for sampling when temperature > 0


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...] = ()  # the generated ids (text alone may not re-tokenize to them)


class InferenceEngine(Protocol):
    name: str
    device: str

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]: ...


def render_prompts(tokenizer: Any, prompts: Sequence[str], chat: bool) -> list[str]:
    """The prompts as the model sees them: as is, or each as a user turn of the chat template."""
    if not chat:
        return list(prompts)
    if not getattr(tokenizer, "chat_template", None):
        raise WorkloadError("chat=true but the model has no chat template", field="params")
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]


def eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """Every token id that ends generation: the generation config's and the tokenizer's."""
    eos = model.generation_config.eos_token_id
    return tuple(sorted({*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None}))


class TransformersEngine:
    """transformers ``generate`` with left-padded batches; CUDA in half precision when present."""

    name = "transformers"

    def __init__(self, model_path: Path, *, device: str | None = None) -> None:
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cpu":
            dtype = torch.float32
        else:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.model, self.tokenizer = load_causal_lm(Path(model_path), device=self.device, dtype=dtype)
        self._eos_ids = eos_ids(self.model, self.tokenizer)

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        import torch

        texts = render_prompts(self.tokenizer, prompts, params.chat)
        torch.manual_seed(params.seed)
        results: list[Completion] = []
        with torch.inference_mode():
            for start in range(0, len(texts), params.batch_size):
                results.extend(self._generate_batch(texts[start : start + params.batch_size], params))
        return results

    def _generate_batch(self, texts: list[str], params: GenerationParams) -> list[Completion]:
        enc = self.tokenizer(
            texts, return_tensors="pt", padding=True, add_special_tokens=not params.chat
        ).to(self.device)
        sampling = params.temperature > 0
        out = self.model.generate(
            **enc,
            max_new_tokens=params.max_new_tokens,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_k=None,
            top_p=None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=list(self._eos_ids),
        )
        new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        return [self._completion(ids, n) for ids, n in zip(new_tokens, prompt_lens, strict=True)]

    def _completion(self, ids: list[int], prompt_tokens: int) -> Completion:
        """Cut at the first end-of-sequence token (counted, not decoded) and decode."""
        end = next((i + 1 for i, t in enumerate(ids) if t in self._eos_ids), len(ids))
        ids = ids[:end]
        return Completion(
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            prompt_tokens=int(prompt_tokens),
            completion_tokens=len(ids),
            token_ids=tuple(int(i) for i in ids),
        )


class VllmEngine:
    """vLLM's offline ``LLM`` over a Hugging Face model directory (CUDA only)."""

    name = "vllm"
    device = "cuda"

    def __init__(self, model_path: Path, *, seed: int = 0) -> None:
        from vllm import LLM

        self.llm = LLM(model=str(model_path), seed=seed)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        from vllm import SamplingParams

        sampling = SamplingParams(
            temperature=params.temperature,
            max_tokens=params.max_new_tokens,
            seed=params.seed if params.temperature > 0 else None,
        )
        texts = render_prompts(self.tokenizer, prompts, params.chat)
        outputs = self.llm.generate(texts, sampling, use_tqdm=False)
        return [
            Completion(
                text=o.outputs[0].text,
                prompt_tokens=len(o.prompt_token_ids or ()),
                completion_tokens=len(o.outputs[0].token_ids),
                token_ids=tuple(int(i) for i in o.outputs[0].token_ids),
            )
            for o in outputs
        ]


def vllm_available() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def engine_name(model_path: Path, prefer: str = "auto") -> EngineName:
    """Which engine serves ``model_path``: vLLM for model directories on a GPU host, else transformers."""
    if prefer not in ("auto", "transformers", "vllm"):
        raise WorkloadError(f"unknown engine {prefer!r}", field="params")
    if prefer == "transformers":
        return "transformers"
    usable = detect_format(Path(model_path)) == "hf-dir" and vllm_available()
    if prefer == "vllm" and not usable:
        raise WorkloadError("engine vllm needs vllm, a CUDA GPU and a model directory", field="params")
    return "vllm" if usable else "transformers"


def select_engine(model_path: Path, prefer: str = "auto") -> InferenceEngine:
    """Build the engine :func:`engine_name` picks (this loads the model)."""
    if engine_name(model_path, prefer) == "vllm":
        return VllmEngine(Path(model_path))
    return TransformersEngine(Path(model_path))
