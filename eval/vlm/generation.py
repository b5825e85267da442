"""Batched, resumable, data-parallel greedy answers from any HF LLaVA directory (the VQA/MMBench runners' engine).

`generate_answers(model_dir, requests, predictions, cfg)` loads the model with `vlm.llava_dir.load_llava` (a directory
that is not a LLaVA is a one-line UserError), sorts the requests by prompt length (longest first, so an OOM shows
at once), and answers them in left-padded batches with `model.generate(do_sample=False)`. Left padding is exact
because generate derives each row's position ids from the attention mask (first real token at position 0) and the
mask hides the pads from every real query; the tests check batched == `vlm.single_answer.greedy_ids` (one at a time, the
path `vlm chat` uses) token for token (the batch-size sensitivity of lmms-eval #236, LLaVA #1928).
Each batch's answers are appended to the JSONL `predictions` as `{"question_id", "answer"}` and flushed; a rerun
skips ids already answered there (a truncated last line from a kill is dropped), so an interrupted run resumes.
Beside it, `predictions.meta.json` records what produced the answers (model, backend, dtype, max_new_tokens and
the caller's fields, e.g. template and prompt layout; not batch size or device): a rerun that differs is refused.
Under torchrun each rank answers a strided share into `predictions.rank{r}` and rank 0 merges at the end.
An image whose loader raises OSError/ValueError/DecompressionBombError gets a row with answer "" and an `"error"`
field: it is not an answer (scoring counts it missing) and the next run retries it.
The next batch's images are loaded and preprocessed in a thread while the model answers the current one.
It returns the answers and a `GenerationStats` (counts and the rate).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from PIL import Image

from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.predictions import answered_rows, answers_of, check_signature, merge_predictions, write_signature
from pretrain.runtime.distributed import group_active, init_distributed, rank_world
from pretrain.runtime.errors import UserError
from pretrain.runtime.jsonl import repair_tail
from pretrain.runtime.progress import Progress
from vlm.llava_dir import load_llava
from vlm.single_answer import (
    STOP_STRING,
    decode_answer,
    greedy_answer,
    greedy_config,
    prompt_inputs,
    stop_token_ids,
    to_model,
    trim_at_stop,
)

log = logging.getLogger(__name__)
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
          "fp32": torch.float32, "float32": torch.float32}  # fmt: skip
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
IMAGE_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


@dataclass
class GenerationConfig:
    """How answers are generated; `max_batches` stops early (smoke runs, the resume test)."""

    batch_size: int = 32
    max_new_tokens: int = 16
    device: str = "auto"  # auto: cuda (this rank's LOCAL_RANK) if available, else cpu
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    backend: str = "hf"  # "hf" | "vllm" (only when vllm is installed)
    progress: bool = True  # tqdm bar with questions/s (rank 0)
    max_batches: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UserError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise UserError(f"dtype: unknown '{self.dtype}' (expected one of {['auto', *DTYPES]})")


@dataclass
class Request:
    """One question: the full prompt with one "<image>" placeholder and a lazy image loader (None = text-only)."""

    id: int | str
    prompt: str
    image: Callable[[], Any] | None
    max_new_tokens: int | None = None


@dataclass
class GenerationStats:
    """What one `generate_answers` call did (summed over ranks).

    answered: rows written now; skipped: of those, images that failed to load; resumed: answers found in the file;
    failed: requests whose row is still an image error at the end (scored as missing, retried by the next run).
    """

    answered: int = 0
    skipped: int = 0
    resumed: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def questions_per_s(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------- model, device, batches


def resolve_device(name: str) -> torch.device:
    """`auto` → this rank's CUDA device (LOCAL_RANK) when CUDA is available, else cpu."""
    if name != "auto":
        try:
            return torch.device(name)
        except RuntimeError:
            raise UserError(f"device: unknown '{name}' (expected auto, cpu, cuda or cuda:N)") from None
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` → bf16 on CUDA (LLaVA's eval precision), fp32 on CPU (bf16 matmuls are slow there)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise UserError(f"dtype: unknown '{name}' (expected one of {['auto', *DTYPES]})")
    return DTYPES[name]


def left_padded(processor: Any) -> Any:
    """`processor` with its tokenizer padding on the left and a pad token (Vicuna's has none; pads are masked)."""
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return processor


def load_model(model_dir: str | Path, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """`vlm.llava_dir.load_llava` (eval mode, on `device` in `dtype`), the processor set up for left-padded batches."""
    model, processor = load_llava(model_dir, device=device, dtype=dtype)
    return model, left_padded(processor)


def prepare_batch(processor: Any, requests: Sequence[Request], images: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Left-padded CPU tensors for a batch (`<image>` expands to N tokens here); `images[i]` None = text-only."""
    present = [im for im in images if im is not None]
    return prompt_inputs(processor, [r.prompt for r in requests], present or None)


@torch.inference_mode()
def generate_prepared(
    model: Any, processor: Any, inputs: dict[str, torch.Tensor], limits: list[int]
) -> list[list[int]]:
    """Greedy ids per row (stop token excluded, at most `limits[i]`) for a prepared batch."""
    inputs = to_model(inputs, model)
    out = model.generate(**inputs, generation_config=greedy_config(processor.tokenizer, max(limits)))
    new = out[:, inputs["input_ids"].shape[1] :].tolist()
    stops = stop_token_ids(processor.tokenizer)
    return [trim_at_stop(row, stops, limit) for row, limit in zip(new, limits)]


def generate_batch_ids(
    model: Any, processor: Any, requests: Sequence[Request], images: Sequence[Any], max_new_tokens: int
) -> list[list[int]]:
    """Greedy ids per request (stop token excluded) from one left-padded batch; `images[i]` is None for text-only."""
    limits = [r.max_new_tokens or max_new_tokens for r in requests]
    return generate_prepared(model, processor, prepare_batch(processor, requests, images), limits)


def generate_one_by_one(model: Any, processor: Any, request: Request, max_new_tokens: int) -> str:
    """The reference answer of one request: `vlm.single_answer.greedy_answer` (batch 1, no padding)."""
    image = request.image() if request.image is not None else None
    return greedy_answer(model, processor, request.prompt, image, max_new_tokens)


def order_by_length(tokenizer: Any, requests: Sequence[Request]) -> list[int]:
    """Request indices, longest tokenized prompt first (stable), so similar lengths share a batch."""
    if not requests:
        return []
    lengths = [len(ids) for ids in tokenizer([r.prompt for r in requests], add_special_tokens=True)["input_ids"]]
    return sorted(range(len(requests)), key=lambda i: -lengths[i])


def run_signature(
    model_dir: str | Path,
    requests: Sequence[Request],
    cfg: GenerationConfig,
    loaded: tuple[Any, Any] | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """What decides the answers: model, backend, dtype, max_new_tokens and the caller's fields (not batch/device)."""
    limits = sorted({r.max_new_tokens or cfg.max_new_tokens for r in requests}) or [cfg.max_new_tokens]
    if loaded is not None:
        dtype = DTYPE_NAMES.get(loaded[0].dtype, str(loaded[0].dtype))
    elif cfg.backend == "vllm":  # vLLM resolves "auto" itself (the model's saved dtype)
        dtype = DTYPE_NAMES.get(DTYPES.get(cfg.dtype), cfg.dtype)
    else:
        dtype = DTYPE_NAMES[resolve_dtype(cfg.dtype, resolve_device(cfg.device))]
    signature = {"model": os.path.abspath(model_dir), "backend": cfg.backend, "dtype": dtype}
    signature["max_new_tokens"] = limits[0] if len(limits) == 1 else limits
    return {**signature, **json.loads(json.dumps(dict(extra or {})))}  # JSON-native, as it is compared after reading


# ---------------------------------------------------------------- backends


class HFBackend:
    """Answers batches with transformers' LLaVA (greedy, KV cache, left padding)."""

    def __init__(self, model_dir: str | Path, cfg: GenerationConfig, loaded: tuple[Any, Any] | None = None) -> None:
        if loaded is None:
            device = resolve_device(cfg.device)
            loaded = load_model(model_dir, device, resolve_dtype(cfg.dtype, device))
        self.model, self.processor = loaded[0], left_padded(loaded[1])
        # The prefetch thread gets its own copy: a fast tokenizer that pads while another thread decodes raises
        # "Already borrowed" (padding settings are mutable state of the shared Rust object).
        self.prep_processor = copy.deepcopy(self.processor)
        self.max_new_tokens = cfg.max_new_tokens

    def order(self, requests: Sequence[Request]) -> list[int]:
        """Longest tokenized prompt first."""
        return order_by_length(self.processor.tokenizer, requests)

    def prepare(self, requests: Sequence[Request], images: Sequence[Any]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """CPU half (prefetch thread): padded, pinned tensors and each row's token limit."""
        inputs = prepare_batch(self.prep_processor, requests, images)
        if self.model.device.type == "cuda":
            inputs = {k: v.pin_memory() for k, v in inputs.items()}
        return inputs, [r.max_new_tokens or self.max_new_tokens for r in requests]

    def run(self, prepared: tuple[dict[str, torch.Tensor], list[int]]) -> list[str]:
        """Device half: greedy answers of a prepared batch."""
        ids = generate_prepared(self.model, self.processor, *prepared)
        return [decode_answer(self.processor.tokenizer, row) for row in ids]


class VLLMBackend:
    """Answers batches with vLLM (`LLM(model=dir)`, images as `multi_modal_data`, temperature 0)."""

    def __init__(self, model_dir: str | Path, cfg: GenerationConfig, loaded: tuple[Any, Any] | None = None) -> None:
        if loaded is not None:
            raise ValueError("backend='vllm' loads the model itself; pass loaded=None")
        try:
            import vllm
        except ImportError as e:
            raise ImportError("backend='vllm' needs the vllm package (pip install vllm); use backend='hf'") from e
        self.vllm = vllm
        dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(cfg.dtype, cfg.dtype)
        self.llm = vllm.LLM(model=str(model_dir), dtype=dtype)
        self.max_new_tokens = cfg.max_new_tokens

    def order(self, requests: Sequence[Request]) -> list[int]:
        """Longest prompt (in characters) first."""
        return sorted(range(len(requests)), key=lambda i: -len(requests[i].prompt))

    def prepare(self, requests: Sequence[Request], images: Sequence[Any]) -> tuple[list[dict], list[Any]]:
        """vLLM prompt dicts (the image as `multi_modal_data`) and per-row greedy sampling parameters."""
        prompts, params = [], []
        for request, image in zip(requests, images):
            prompt: dict[str, Any] = {"prompt": request.prompt}
            if image is not None:
                prompt["multi_modal_data"] = {"image": image}
            prompts.append(prompt)
            limit = request.max_new_tokens or self.max_new_tokens
            params.append(self.vllm.SamplingParams(temperature=0.0, max_tokens=limit, stop=[STOP_STRING]))
        return prompts, params

    def run(self, prepared: tuple[list[dict], list[Any]]) -> list[str]:
        """One `LLM.generate` call for the batch (vLLM schedules it internally)."""
        outputs = self.llm.generate(*prepared, use_tqdm=False)
        return [o.outputs[0].text.split(STOP_STRING)[0].strip() for o in outputs]


BACKENDS = {"hf": HFBackend, "vllm": VLLMBackend}


# ---------------------------------------------------------------- the runner


def _distributed() -> tuple[int, int, bool]:
    """(rank, world, created): joins the torchrun group through the runtime's `init_distributed` when WORLD_SIZE > 1.

    Ranks finish their shares at different times and wait in a barrier: the runtime's timeout applies (2 h by
    default; SUPERCLASS_DIST_TIMEOUT_MIN raises it for very long runs).
    """
    rank, world = rank_world()
    if world <= 1 or group_active():
        return rank, world, False
    info = init_distributed("auto")
    return info.rank, info.world_size, True


def _load_images(requests: Sequence[Request]) -> tuple[list[Any], list[str | None]]:
    """Each request's image (None for text-only) and the loader's error message where it raised an IMAGE_ERRORS."""
    images: list[Any] = []
    errors: list[str | None] = []
    for request in requests:
        try:
            images.append(request.image() if request.image is not None else None)
            errors.append(None)
        except IMAGE_ERRORS as e:
            log.warning("question %r: image failed to load (%s: %s); retried next run", request.id, type(e).__name__, e)
            images.append(None)
            errors.append(f"{type(e).__name__}: {e}")
    return images, errors


def _prepare(backend: Any, batch: Sequence[Request]) -> tuple[Sequence[Request], list[str | None], Any]:
    """The CPU half of a batch (image loading, preprocessing), run one batch ahead in a thread."""
    images, errors = _load_images(batch)
    ok = [i for i, e in enumerate(errors) if e is None]
    return batch, errors, backend.prepare([batch[i] for i in ok], [images[i] for i in ok]) if ok else None


def _answer_rows(backend: Any, prepared: tuple[Sequence[Request], list[str | None], Any]) -> list[dict[str, Any]]:
    """One predictions row per request of a batch; a failed image gets an error row (answer "") and no model run."""
    batch, errors, inputs = prepared
    ok = [i for i, e in enumerate(errors) if e is None]
    answers = dict(zip(ok, backend.run(inputs))) if ok else {}
    rows = []
    for i, request in enumerate(batch):
        row = {"question_id": request.id, "answer": answers.get(i, "")}
        if errors[i] is not None:
            row["error"] = errors[i]
        rows.append(row)
    return rows


def _check_requests(requests: Sequence[Request]) -> list[QuestionId]:
    """The normalised ids (unique), checking each prompt with a placeholder has an image (else it fails mid-run)."""
    try:
        ids = [norm_id(r.id) for r in requests]
    except ValueError as exc:
        raise ValueError(f"request {exc}") from None
    if len(set(ids)) != len(ids):
        raise ValueError(f"{len(ids) - len(set(ids))} duplicate request id(s)")
    for r in requests:
        if r.image is None and "<image>" in r.prompt:
            raise ValueError(f"request {r.id!r}: prompt has '<image>' but no image loader")
    return ids


def _run_share(
    backend: Any, todo: Sequence[Request], out_path: Path, cfg: GenerationConfig, show: bool
) -> tuple[int, int]:
    """Answer `todo` in batches, appending + flushing after each; returns (answered, skipped).

    The next batch's images are loaded and preprocessed in a thread while the model answers the current one.
    """
    order = backend.order(todo)
    batches = [[todo[i] for i in order[s : s + cfg.batch_size]] for s in range(0, len(order), cfg.batch_size)]
    batches = batches[: cfg.max_batches] if cfg.max_batches is not None else batches
    answered = skipped = 0
    bar = Progress(sum(map(len, batches)), label="answers", unit="question") if show else None
    repair_tail(out_path)
    with open(out_path, "a", encoding="utf-8") as f, ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(_prepare, backend, batches[0]) if batches else None
        for b in range(len(batches)):
            prepared = upcoming.result()
            upcoming = pool.submit(_prepare, backend, batches[b + 1]) if b + 1 < len(batches) else None
            rows = _answer_rows(backend, prepared)
            f.write("".join(json.dumps(row) + "\n" for row in rows))
            f.flush()
            os.fsync(f.fileno())
            answered += len(rows)
            skipped += sum("error" in row for row in rows)
            if bar is not None:
                bar.update(len(rows))
    if bar is not None:
        bar.close()
    return answered, skipped


def _reduce(values: list[float], world: int, op: Any = dist.ReduceOp.SUM) -> list[float]:
    """All-reduce a few numbers over ranks (on CUDA under nccl, which cannot reduce CPU tensors)."""
    if world == 1:
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def generate_answers(
    model_dir: str | Path,
    requests: Sequence[Request],
    predictions: str | Path,
    cfg: GenerationConfig,
    loaded: tuple[Any, Any] | None = None,
    signature: Mapping[str, Any] | None = None,
) -> tuple[dict[int | str, str], GenerationStats]:
    """Answer every request not yet answered in `predictions`: ({id: answer} on rank 0, {} elsewhere; the stats).

    Image-error rows are left out of the result (and retried by the next call). `loaded` is an already loaded
    (model, processor) to reuse instead of reading `model_dir`. `signature` adds the caller's fields (template,
    prompt layout) to what `predictions.meta.json` records; a resume that differs is a UserError.
    The stats' timing excludes model loading.
    """
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown backend {cfg.backend!r} (expected one of {sorted(BACKENDS)})")
    keys = _check_requests(requests)
    path = Path(predictions)
    path.parent.mkdir(parents=True, exist_ok=True)
    rank, world, created = _distributed()
    written = answered_rows(path)
    done = {k: row for k, row in written.items() if "error" not in row}  # image errors are tried again
    sig = run_signature(model_dir, requests, cfg, loaded, signature)
    check_signature(path, sig, resuming=bool(written))  # every rank reads the same files: all raise or none
    if world > 1:  # everyone has read the same files before anyone appends: the shares are consistent
        dist.barrier()
    todo = [r for r, k in zip(requests, keys) if k not in done][rank::world]
    answered, skipped, seconds = 0, 0, 0.0
    if todo:
        backend = BACKENDS[cfg.backend](model_dir, cfg, loaded)
        write_signature(path, sig)  # once the model has loaded, before the first answer is appended
        out_path = path if world == 1 else path.with_name(f"{path.name}.rank{rank}")
        start = time.perf_counter()
        answered, skipped = _run_share(backend, todo, out_path, cfg, cfg.progress and rank == 0)
        seconds = time.perf_counter() - start
    answered, skipped = _reduce([answered, skipped], world)  # also a barrier: every shard is complete
    (seconds,) = _reduce([seconds], world, dist.ReduceOp.MAX)  # the slowest rank's time, so q/s is the job's
    stats = GenerationStats(int(answered), int(skipped), sum(k in done for k in keys), 0, seconds)
    result: dict[int | str, str] = {}
    if rank == 0:
        result, stats.failed = _collect(path, requests, keys, sig)
        log.info("%d answered (%.1f q/s), %d skipped images, %d resumed, %d without an answer (image errors)",
                 stats.answered, stats.questions_per_s, stats.skipped, stats.resumed, stats.failed)  # fmt: skip
    if world > 1:
        dist.barrier()  # nobody starts a next run before the merge is done
        if created:
            dist.destroy_process_group()
    return result, stats


def _collect(
    path: Path, requests: Sequence[Request], keys: Sequence[QuestionId], signature: dict[str, Any]
) -> tuple[dict[int | str, str], int]:
    """Rank 0 after the run: merge the shards; the answers of `requests` and how many are image errors."""
    rows = merge_predictions(path)
    if rows:
        write_signature(path, signature)  # also adopts answers from before signatures existed
    answers = answers_of(rows)
    failed = sum(k in rows and k not in answers for k in keys)
    return {r.id: answers[k] for r, k in zip(requests, keys) if k in answers}, failed
