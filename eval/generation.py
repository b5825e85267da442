"""Batched, resumable, data-parallel greedy answers from any HF LLaVA directory (the VQA/MMBench runners' engine).

`generate_answers(model_dir, requests, predictions, cfg)` loads `LlavaForConditionalGeneration` + `AutoProcessor`
from the directory, sorts the requests by prompt length (longest first, so an OOM shows at once), and answers them in
left-padded batches with `model.generate(do_sample=False)`. Left padding is exact because generate derives each
row's position ids from the attention mask (first real token at position 0) and the mask hides the pads from every
real query; the tests check batched == one-at-a-time token for token (the batch-size sensitivity of lmms-eval #236,
LLaVA #1928). Each batch's answers are appended to the JSONL `predictions` as `{"question_id", "answer"}` and
flushed; a rerun skips ids already there (a truncated last line from a kill is dropped), so an interrupted run
resumes. Under torchrun each rank answers a strided share into `predictions.rank{r}` and rank 0 merges at the end.
An image whose loader raises OSError/ValueError is answered "" (with an `"error"` field) and counted as skipped.
The next batch's images are loaded and preprocessed in a thread while the model answers the current one.
Counts and the rate land in `generate_answers.last_stats` (a `GenerationStats`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.jsonl import read_jsonl, repair_tail

log = logging.getLogger(__name__)
STOP_STRING = "</s>"


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


@dataclass
class Request:
    """One question: the full prompt with one "<image>" placeholder and a lazy image loader (None = text-only)."""

    id: int | str
    prompt: str
    image: Callable[[], Any] | None
    max_new_tokens: int | None = None


@dataclass
class GenerationStats:
    """What one `generate_answers` call did (summed over ranks): answered now, skipped images, resumed from file."""

    answered: int = 0
    skipped: int = 0
    resumed: int = 0
    seconds: float = 0.0

    @property
    def questions_per_s(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------- model, device, decoding


def resolve_device(name: str) -> torch.device:
    """`auto` → this rank's CUDA device (LOCAL_RANK) when CUDA is available, else cpu."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` → bf16 on CUDA (LLaVA's eval precision), fp32 on CPU (bf16 matmuls are slow there)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
            "fp32": torch.float32, "float32": torch.float32}[name]  # fmt: skip


def load_llava(model_dir: str | Path, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """The model (eval mode, on `device` in `dtype`) and its processor, tokenizer set to left padding."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(str(model_dir))
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token_id is None:  # Vicuna's tokenizer has none; pads are masked out anyway
        processor.tokenizer.pad_token = processor.tokenizer.unk_token or processor.tokenizer.eos_token
    return model, processor


def stop_token_ids(tokenizer: Any) -> list[int]:
    """EOS plus `</s>` when it is one token (Vicuna's turn end), so every row stops where LLaVA's would."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    sep = tokenizer.convert_tokens_to_ids(STOP_STRING)
    if isinstance(sep, int) and sep != tokenizer.unk_token_id and sep not in ids:
        ids.append(sep)
    return ids


def _hf_generation_config(tokenizer: Any, max_new_tokens: int) -> Any:
    """Plain greedy decoding; the model dir's own generation_config.json (sampling, max_length) is not used."""
    from transformers import GenerationConfig as HFGenerationConfig

    return HFGenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip


def trim_at_stop(ids: Sequence[int], stop_ids: Sequence[int], limit: int) -> list[int]:
    """The generated ids before the first stop token, at most `limit` of them (pads after EOS are dropped)."""
    out = []
    for token in list(ids)[:limit]:
        if token in stop_ids:
            break
        out.append(int(token))
    return out


def decode_answer(tokenizer: Any, ids: Sequence[int]) -> str:
    """The answer text: special tokens dropped, cut at a textual `</s>`, stripped."""
    return tokenizer.decode(list(ids), skip_special_tokens=True).split(STOP_STRING)[0].strip()


def prepare_batch(processor: Any, requests: Sequence[Request], images: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Left-padded CPU tensors for a batch (`<image>` expands to N tokens here); `images[i]` None = text-only."""
    present = [im for im in images if im is not None]
    return dict(processor(images=present or None, text=[r.prompt for r in requests], padding=True, return_tensors="pt"))


def _to_model(inputs: dict[str, torch.Tensor], model: Any) -> dict[str, torch.Tensor]:
    """Inputs on the model's device, pixel values in its dtype (bf16 on CUDA)."""
    out = {k: v.to(model.device, non_blocking=True) for k, v in inputs.items()}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(model.dtype)
    return out


@torch.inference_mode()
def generate_prepared(
    model: Any, processor: Any, inputs: dict[str, torch.Tensor], limits: list[int]
) -> list[list[int]]:
    """Greedy ids per row (stop token excluded, at most `limits[i]`) for a prepared batch."""
    inputs = _to_model(inputs, model)
    out = model.generate(**inputs, generation_config=_hf_generation_config(processor.tokenizer, max(limits)))
    new = out[:, inputs["input_ids"].shape[1] :].tolist()
    stops = stop_token_ids(processor.tokenizer)
    return [trim_at_stop(row, stops, limit) for row, limit in zip(new, limits)]


def generate_batch_ids(
    model: Any, processor: Any, requests: Sequence[Request], images: Sequence[Any], max_new_tokens: int
) -> list[list[int]]:
    """Greedy ids per request (stop token excluded) from one left-padded batch; `images[i]` is None for text-only."""
    limits = [r.max_new_tokens or max_new_tokens for r in requests]
    return generate_prepared(model, processor, prepare_batch(processor, requests, images), limits)


@torch.inference_mode()
def one_by_one_ids(model: Any, processor: Any, request: Request, max_new_tokens: int) -> list[int]:
    """The reference: HF generate on this request alone (batch 1, no padding), ids before the stop token."""
    image = request.image() if request.image is not None else None
    inputs = _to_model(prepare_batch(processor, [request], [image]), model)
    out = model.generate(**inputs, generation_config=_hf_generation_config(processor.tokenizer, max_new_tokens))
    return trim_at_stop(out[0, inputs["input_ids"].shape[1] :].tolist(), stop_token_ids(processor.tokenizer), 10**9)


def generate_one_by_one(model: Any, processor: Any, request: Request, max_new_tokens: int) -> str:
    """The reference answer text: HF generate with batch 1, decoded as the batched path decodes."""
    return decode_answer(processor.tokenizer, one_by_one_ids(model, processor, request, max_new_tokens))


def order_by_length(tokenizer: Any, requests: Sequence[Request]) -> list[int]:
    """Request indices, longest tokenized prompt first (stable), so similar lengths share a batch."""
    if not requests:
        return []
    lengths = [len(ids) for ids in tokenizer([r.prompt for r in requests], add_special_tokens=True)["input_ids"]]
    return sorted(range(len(requests)), key=lambda i: -lengths[i])


# ---------------------------------------------------------------- predictions files


def read_predictions(path: str | Path) -> dict[int | str, dict[str, Any]]:
    """Rows by question id from a JSONL file; an undecodable line (a kill's truncated tail) is ignored."""
    rows: dict[int | str, dict[str, Any]] = {}
    lines, bad = read_jsonl(path)
    for row in lines:
        if "question_id" in row and isinstance(row["question_id"], (int, str)):
            rows.setdefault(row["question_id"], row)
        else:
            bad += 1
    if bad:
        log.warning("%s: ignored %d unreadable line(s) (an interrupted write)", path, bad)
    return rows


def rank_files(path: Path) -> list[Path]:
    """`predictions.rank{r}` shards of this or an earlier (possibly differently sized) data-parallel run."""
    return sorted(path.parent.glob(f"{path.name}.rank*"))


def answered_rows(path: Path) -> dict[int | str, dict[str, Any]]:
    """Every row already written: the merged file first, then any rank shards."""
    rows = read_predictions(path)
    for shard in rank_files(path):
        for qid, row in read_predictions(shard).items():
            rows.setdefault(qid, row)
    return rows


def merge_predictions(path: Path) -> dict[int | str, dict[str, Any]]:
    """Fold the rank shards into `path` (atomically, each id once) and delete them; returns all rows."""
    shards = rank_files(path)
    rows = answered_rows(path)
    if shards:
        write_text_atomically(path, "".join(json.dumps(row) + "\n" for row in rows.values()))
        for shard in shards:
            shard.unlink()
    return rows


# ---------------------------------------------------------------- backends


class HFBackend:
    """Answers batches with transformers' LLaVA (greedy, KV cache, left padding)."""

    def __init__(self, model_dir: str | Path, cfg: GenerationConfig, loaded: tuple[Any, Any] | None = None) -> None:
        if loaded is None:
            device = resolve_device(cfg.device)
            loaded = load_llava(model_dir, device, resolve_dtype(cfg.dtype, device))
        self.model, self.processor = loaded
        self.processor.tokenizer.padding_side = "left"
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
    """(rank, world, created): joins the torchrun group from env (gloo on CPU, nccl on CUDA) when WORLD_SIZE > 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return 0, 1, False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    # Ranks finish their shares at different times and then wait in a barrier: allow hours, not the 10-min default.
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", timeout=timedelta(hours=12))
    return dist.get_rank(), dist.get_world_size(), True


def _load_images(requests: Sequence[Request]) -> tuple[list[Any], list[str | None]]:
    """Each request's image (None for text-only) and the loader's error message where it raised OSError/ValueError."""
    images: list[Any] = []
    errors: list[str | None] = []
    for request in requests:
        try:
            images.append(request.image() if request.image is not None else None)
            errors.append(None)
        except (OSError, ValueError) as e:
            log.warning("question %r: image failed to load (%s: %s); answered ''", request.id, type(e).__name__, e)
            images.append(None)
            errors.append(f"{type(e).__name__}: {e}")
    return images, errors


def _prepare(backend: Any, batch: Sequence[Request]) -> tuple[Sequence[Request], list[str | None], Any]:
    """The CPU half of a batch (image loading, preprocessing), run one batch ahead in a thread."""
    images, errors = _load_images(batch)
    ok = [i for i, e in enumerate(errors) if e is None]
    return batch, errors, backend.prepare([batch[i] for i in ok], [images[i] for i in ok]) if ok else None


def _answer_rows(backend: Any, prepared: tuple[Sequence[Request], list[str | None], Any]) -> list[dict[str, Any]]:
    """One predictions row per request of a batch; failed images are answered "" without running the model."""
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


def _check_requests(requests: Sequence[Request]) -> None:
    """Unique ids, and an image for every prompt that has a placeholder (else the processor fails mid-run)."""
    ids = [r.id for r in requests]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{len(ids) - len(set(ids))} duplicate request id(s)")
    for r in requests:
        if r.image is None and "<image>" in r.prompt:
            raise ValueError(f"request {r.id!r}: prompt has '<image>' but no image loader")


def _run_share(
    backend: Any, todo: Sequence[Request], out_path: Path, cfg: GenerationConfig, show: bool
) -> tuple[int, int]:
    """Answer `todo` in batches, appending + flushing after each; returns (answered, skipped).

    The next batch's images are loaded and preprocessed in a thread while the model answers the current one.
    """
    from tqdm.auto import tqdm

    order = backend.order(todo)
    batches = [[todo[i] for i in order[s : s + cfg.batch_size]] for s in range(0, len(order), cfg.batch_size)]
    batches = batches[: cfg.max_batches] if cfg.max_batches is not None else batches
    answered = skipped = 0
    bar = tqdm(total=sum(map(len, batches)), unit="q", desc="answers", disable=not show, dynamic_ncols=True)
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
            bar.update(len(rows))
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
) -> dict[int | str, str]:
    """Answer every request not yet in `predictions`; {id: answer} for all requests on rank 0, {} elsewhere.

    `loaded` is an already loaded (model, processor) to reuse across benchmarks instead of reading `model_dir`.
    Timing in `generate_answers.last_stats` excludes model loading.
    """
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown backend {cfg.backend!r} (expected one of {sorted(BACKENDS)})")
    _check_requests(requests)
    path = Path(predictions)
    path.parent.mkdir(parents=True, exist_ok=True)
    rank, world, created = _distributed()
    done = answered_rows(path)
    if world > 1:  # everyone has read the same files before anyone appends: the shares are consistent
        dist.barrier()
    todo = [r for r in requests if r.id not in done][rank::world]
    answered, skipped, seconds = 0, 0, 0.0
    if todo:
        backend = BACKENDS[cfg.backend](model_dir, cfg, loaded)
        out_path = path if world == 1 else path.with_name(f"{path.name}.rank{rank}")
        start = time.perf_counter()
        answered, skipped = _run_share(backend, todo, out_path, cfg, cfg.progress and rank == 0)
        seconds = time.perf_counter() - start
    answered, skipped = _reduce([answered, skipped], world)  # also a barrier: every shard is complete
    (seconds,) = _reduce([seconds], world, dist.ReduceOp.MAX)  # the slowest rank's time, so q/s is the job's
    stats = GenerationStats(int(answered), int(skipped), sum(r.id in done for r in requests), seconds)
    generate_answers.last_stats = stats  # type: ignore[attr-defined]
    result: dict[int | str, str] = {}
    if rank == 0:
        rows = merge_predictions(path)
        result = {r.id: rows[r.id]["answer"] for r in requests if r.id in rows}
        log.info("%d answered (%.1f q/s), %d skipped images, %d resumed", stats.answered, stats.questions_per_s,
                 stats.skipped, stats.resumed)  # fmt: skip
    if world > 1:
        dist.barrier()  # nobody starts a next run before the merge is done
        if created:
            dist.destroy_process_group()
    return result


generate_answers.last_stats = GenerationStats()  # type: ignore[attr-defined]
