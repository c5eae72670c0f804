"""Inference engines: vLLM on a GPU when installed, transformers/torch everywhere else.

Greedy decoding (``temperature=0``) is deterministic; verification relies on that. torch,
transformers and vllm are imported only when an engine is built.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field

from gpumesh.chatdata import ChatTemplateError, render_chat
from gpumesh.errors import WorkloadError
from gpumesh.workload import WorkloadParams
from provider_node.workloads.adapters import AdapterError, AdapterSet, read_adapter_config
from provider_node.workloads.decoding import Grammars, cut_at_stop, json_schema, token_entry, token_logprobs
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
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0, le=20)
    response_format: dict[str, Any] | None = None  # requestline.ResponseFormat, canonical

    @property
    def constrained(self) -> bool:
        return bool(self.response_format) and self.response_format.get("type") != "text"

    @property
    def one_at_a_time(self) -> bool:
        """Sampled lines run alone, each from its own seed (reproducible whatever the batch);
        constrained lines too, each with its own grammar."""
        return self.temperature > 0 or self.constrained

    def for_line(self, line: Any) -> GenerationParams:
        """These settings with a line's own (a ``gpumesh.requestline.RequestLine``) applied."""
        update = {k: getattr(line, k) for k in ("max_new_tokens", "temperature", "top_p", "seed", "stop",
                                               "logprobs", "top_logprobs") if getattr(line, k) is not None}
        if line.response_format is not None:
            update["response_format"] = line.response_format.canonical()
        if line.messages is not None:
            update["chat"] = True
        return self.model_copy(update=update) if update else self


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...] = ()  # the generated ids (text alone may not re-tokenize to them)
    finish_reason: str = "stop"  # OpenAI's: "stop" (end of sequence or a stop string) or "length"
    logprobs: list[dict[str, Any]] | None = None  # with params.logprobs: OpenAI's logprobs.content


class InferenceEngine(Protocol):
    name: str
    device: str

    def generate(self, prompts: Sequence[str], params: GenerationParams,
                 adapters: Sequence[str | None] | None = None) -> list[Completion]:
        """Completions of ``prompts`` in order; ``adapters[i]``: the LoRA adapter (CID) prompt ``i``
        runs under, None for the base model."""
        ...


Prompt = str | Sequence[Mapping[str, str]]  # text, or chat messages ({"role", "content"})


def render_prompts(tokenizer: Any, prompts: Sequence[Prompt], chat: bool) -> list[str]:
    """The prompts as the model sees them: text as is (or, with ``chat``, as one user turn), and
    messages through the model's chat template."""
    if not chat and all(isinstance(p, str) for p in prompts):
        return list(prompts)
    if not getattr(tokenizer, "chat_template", None):
        raise WorkloadError("chat messages but the model has no chat template", field="params")
    try:
        return [
            render_chat(tokenizer, [{"role": "user", "content": p}] if isinstance(p, str) else
                        [{"role": m["role"], "content": m["content"]} for m in p],
                        tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
    except ChatTemplateError as exc:  # the model's template (or it and these messages): final
        raise WorkloadError(str(exc), field="chat_template") from exc


def eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """Every token id that ends generation: the generation config's and the tokenizer's."""
    eos = model.generation_config.eos_token_id
    return tuple(sorted({*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None}))


class TransformersEngine:
    """transformers ``generate`` with left-padded batches; CUDA in half precision when present."""

    name = "transformers"

    def __init__(self, model_path: Path, *, device: str | None = None,
                 adapters: Mapping[str, Path] | None = None) -> None:
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cpu":
            dtype = torch.float32
        else:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        base, self.tokenizer = load_causal_lm(Path(model_path), device=self.device, dtype=dtype)
        self.adapters = AdapterSet(base, adapters)  # one adapter per sub-batch (peft)
        self.model = self.adapters.model
        self._eos_ids = eos_ids(base, self.tokenizer)
        self._grammars: Grammars | None = None

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams,
                 adapters: Sequence[str | None] | None = None) -> list[Completion]:
        """One adapter per sub-batch: the prompts of each adapter (and the base model's) run apart."""
        if not self.adapters.names:  # the base model alone (no adapter was loaded)
            return self._generate_all(prompts, params)
        adapters = list(adapters) if adapters is not None else [None] * len(prompts)
        groups: dict[str | None, list[int]] = {}
        for i, adapter in enumerate(adapters):
            groups.setdefault(adapter, []).append(i)
        results: list[Completion | None] = [None] * len(prompts)
        for adapter, indices in groups.items():
            with self.adapters.use(adapter):
                done = self._generate_all([prompts[i] for i in indices], params)
            for i, completion in zip(indices, done, strict=True):
                results[i] = completion
        return [c for c in results if c is not None]

    def _generate_all(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Completion]:
        import torch

        texts = render_prompts(self.tokenizer, prompts, params.chat)
        size = 1 if params.one_at_a_time else params.batch_size
        results: list[Completion] = []
        with torch.inference_mode():
            for start in range(0, len(texts), size):
                torch.manual_seed(params.seed)  # per batch: a sampled line's draws depend on its seed alone
                results.extend(self._generate_batch(texts[start : start + size], params))
        return results

    @property
    def grammars(self) -> Grammars:
        if self._grammars is None:
            self._grammars = Grammars(self.tokenizer, self.model.get_input_embeddings().num_embeddings)
        return self._grammars

    def _generate_batch(self, texts: list[str], params: GenerationParams) -> list[Completion]:
        enc = self.tokenizer(
            texts, return_tensors="pt", padding=True, add_special_tokens=not params.chat
        ).to(self.device)
        sampling = params.temperature > 0
        extra: dict[str, Any] = {}
        if params.constrained:
            extra["logits_processor"] = [self.grammars.logits_processor(params.response_format)]
        if params.stop:
            extra |= {"stop_strings": list(params.stop), "tokenizer": self.tokenizer}
        out = self.model.generate(
            **enc,
            max_new_tokens=params.max_new_tokens,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_k=None,
            top_p=params.top_p if sampling and params.top_p < 1 else None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=list(self._eos_ids),
            return_dict_in_generate=True,
            output_logits=params.logprobs,
            **extra,
        )
        width = enc["input_ids"].shape[1]
        new_tokens = out.sequences[:, width:].tolist()
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, (ids, n) in enumerate(zip(new_tokens, prompt_lens, strict=True)):
            done = self._completion(ids, n, params)
            if params.logprobs:
                rows = [step[row] for step in out.logits[: done.completion_tokens]]
                done = replace(done, logprobs=token_logprobs(self.tokenizer, rows, done.token_ids, params.top_logprobs))
            results.append(done)
        return results

    def _completion(self, ids: list[int], prompt_tokens: int, params: GenerationParams) -> Completion:
        """Cut at the first end-of-sequence token (counted, not decoded) or stop string, and decode."""
        end = next((i + 1 for i, t in enumerate(ids) if t in self._eos_ids), None)
        ids = ids[:end] if end is not None else ids
        cut = cut_at_stop(self.tokenizer, ids, params.stop)
        stopped = end is not None or cut.stop is not None
        return Completion(
            text=cut.text,
            prompt_tokens=int(prompt_tokens),
            completion_tokens=len(cut.ids),
            token_ids=tuple(int(i) for i in cut.ids),
            finish_reason="stop" if stopped else "length",
        )


class VllmEngine:
    """vLLM's offline ``LLM`` over a Hugging Face model directory (CUDA only)."""

    name = "vllm"
    device = "cuda"

    def __init__(self, model_path: Path, *, seed: int = 0, adapters: Mapping[str, Path] | None = None) -> None:
        from vllm import LLM

        self.adapters: dict[str, tuple[int, Path]] = {}  # CID -> (vLLM's LoRA id, directory)
        ranks = []
        for i, (cid, path) in enumerate(sorted((adapters or {}).items()), start=1):
            ranks.append(int(read_adapter_config(Path(path), cid).get("r") or 8))
            self.adapters[cid] = (i, Path(path))
        lora = {"enable_lora": True, "max_loras": len(ranks), "max_lora_rank": max(ranks)} if ranks else {}
        self.llm = LLM(model=str(model_path), seed=seed, **lora)  # multi-LoRA: adapters share each batch
        self.tokenizer = self.llm.get_tokenizer()

    def _lora(self, adapter: str | None) -> Any:
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        if adapter not in self.adapters:
            raise AdapterError(adapter, "the line names an adapter this task was not given")
        lora_id, path = self.adapters[adapter]
        return LoRARequest(f"gm_adapter_{lora_id}", lora_id, str(path))

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams,
                 adapters: Sequence[str | None] | None = None) -> list[Completion]:
        """One batch whatever the adapters: vLLM's multi-LoRA serves each prompt under its own."""
        from vllm import SamplingParams

        extra: dict[str, Any] = {}
        if params.constrained:
            extra["structured_outputs"] = _vllm_structured(params.response_format)
        sampling = SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed if params.temperature > 0 else None,
            stop=list(params.stop) or None,
            logprobs=params.top_logprobs if params.logprobs else None,
            **extra,
        )
        texts = render_prompts(self.tokenizer, prompts, params.chat)
        outputs = self.llm.generate(texts, sampling, use_tqdm=False, lora_request=[self._lora(a) for a in adapters] if adapters and any(adapters) else None)
        return [self._completion(o, params) for o in outputs]

    def _completion(self, o: Any, params: GenerationParams) -> Completion:
        first = o.outputs[0]
        ids = tuple(int(i) for i in first.token_ids)
        logprobs = None
        if params.logprobs and first.logprobs is not None:
            logprobs = [_vllm_logprob(self.tokenizer, tok, step, params.top_logprobs)
                        for tok, step in zip(ids, first.logprobs, strict=False)]
        return Completion(
            text=first.text,
            prompt_tokens=len(o.prompt_token_ids or ()),
            completion_tokens=len(ids),
            token_ids=ids,
            finish_reason="length" if first.finish_reason == "length" else "stop",
            logprobs=logprobs,
        )


def _vllm_structured(response_format: Mapping[str, Any]) -> Any:
    """vLLM's structured-output request for a ``response_format``: the same compact schema the
    transformers engine and the rescorer constrain to (``decoding.json_schema``)."""
    from vllm.sampling_params import StructuredOutputsParams

    return StructuredOutputsParams(json=json_schema(response_format), disable_any_whitespace=True)


def _vllm_logprob(tokenizer: Any, tok: int, step: Mapping[int, Any], top: int) -> dict[str, Any]:
    ranked = sorted(step.items(), key=lambda kv: -kv[1].logprob)[:top]
    chosen = step.get(tok)
    return token_entry(tokenizer, tok, chosen.logprob if chosen is not None else float("-inf")) | {
        "top_logprobs": [token_entry(tokenizer, i, v.logprob) for i, v in ranked]}


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
        # This provider's setup (and whether it could convert a GGUF), not the job's: another may run it.
        raise WorkloadError("engine vllm needs vllm, a CUDA GPU and a model directory", field="params",
                            retryable=True)
    return "vllm" if usable else "transformers"


def select_engine(model_path: Path, prefer: str = "auto", *, adapters: Mapping[str, Path] | None = None
                  ) -> InferenceEngine:
    """Build the engine :func:`engine_name` picks (this loads the model and its LoRA adapters)."""
    if engine_name(model_path, prefer) == "vllm":
        return VllmEngine(Path(model_path), adapters=adapters)
    return TransformersEngine(Path(model_path), adapters=adapters)
