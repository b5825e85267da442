"""LLaVA-1.5 training data: LLaVA JSON conversations + an image folder -> padded, label-masked, resumable batches.

A dataset file is LLaVA's list (`.json`) or lines (`.jsonl`) of `{"id", "image" (optional, relative to the image
folder), "conversations": [{"from": "human"|"gpt", "value": ...}, ...]}`; rows without `image` are text-only.
Rows are checked up front with string work only (no image is opened, nothing is tokenized), so 665k rows load in
seconds; images and tokens are read lazily, one batch at a time, like LLaVA's `LazySupervisedDataset`.

A bad sample is skipped, counted by reason (`REASONS`) and replaced, so a batch is always full:
- up front: `bad_conversation` (malformed row, wrong roles, empty turn: `TemplateError`), `no_image_token` (an
  image but no `<image>` in a human turn), `image_token_without_image` (`<image>` in a text-only sample);
- lazily: `missing_image`, `unreadable_image`, `image_truncated` (the image block would not fit in `max_length`;
  it is never split) and `no_supervised_tokens` (truncation left no labelled token: LLaVA's silent all -100 case).

`LlavaBatches` is the training loop's `BatchSource`: an endless, per-rank stream whose order is a pure function
of (seed, epoch), grouped by modality and length as LLaVA's `LengthGroupedSampler(group_by_modality=True)` but
without its one mixed leftover batch, and whose `state_dict` (epoch, batch position, bad samples found) makes a
resumed run yield exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from pretrain.data.shards import open_rgb
from pretrain.runtime.errors import ConfigError, DataError
from vlm.templates import IGNORE_INDEX, IMAGE_TOKEN, Encoded, TemplateError, encode, render

REASONS = (
    "bad_conversation",
    "no_image_token",
    "image_token_without_image",
    "missing_image",
    "unreadable_image",
    "image_truncated",
    "no_supervised_tokens",
)
STATE_VERSION = 1


def _mix(*parts: Any) -> int:
    """A 63-bit seed from `parts`, stable across processes and Python versions (no `hash` randomisation)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator and `random` for a random image transform, then restore the caller's state."""
    torch_state, py_state = torch.default_generator.get_state(), random.getstate()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.default_generator.set_state(torch_state)
        random.setstate(py_state)


def read_llava_json(path: str | Path) -> list[Any]:
    """The rows of a LLaVA `.json` list or `.jsonl` file; a `.jsonl` line that is not JSON becomes a None row."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"LLaVA data file {path} could not be read: {str(exc).splitlines()[0]}") from None
    if path.suffix == ".jsonl":
        rows: list[Any] = []
        for line in text.splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    rows.append(None)  # counted as bad_conversation, like any malformed row
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"LLaVA data file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise DataError(f"LLaVA data file {path} holds a {type(data).__name__}, expected a list of samples")
    return data


@dataclass
class Sample:
    """One training sample: ids with the image block expanded, labels (IGNORE_INDEX off the answers), image."""

    index: int
    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor | None


def expand_image(
    encoded: Encoded, image_token_id: int, num_image_tokens: int, max_length: int
) -> tuple[list[int], list[int]] | str:
    """Expand the one `<image>` id into the image block and truncate to `max_length`; a reason string if unusable."""
    ids, labels = list(encoded.input_ids), list(encoded.labels)
    positions = [i for i, t in enumerate(ids) if t == image_token_id]
    if len(positions) > 1:
        return "bad_conversation"
    if positions:
        p = positions[0]
        if p + num_image_tokens > max_length:
            return "image_truncated"
        ids[p : p + 1] = [image_token_id] * num_image_tokens
        labels[p : p + 1] = [IGNORE_INDEX] * num_image_tokens
    ids, labels = ids[:max_length], labels[:max_length]
    if all(x == IGNORE_INDEX for x in labels):
        return "no_supervised_tokens"
    return ids, labels


def _image_token_id(tokenizer: Any) -> int:
    """The id of `<image>`, which must be one special token (else `encode` would split the placeholder)."""
    ids = tokenizer(IMAGE_TOKEN, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ConfigError(f"the tokenizer has no single '{IMAGE_TOKEN}' token (add it as a special token)")
    return int(ids[0])


class LlavaSamples:
    """Validated LLaVA rows with their modality and length estimate; `build(i)` reads and tokenizes one lazily.

    `cache_size` > 0 keeps up to that many built samples in memory, so a small set seen for many epochs (the demo's,
    ten) is read, tokenized and preprocessed once. Only for a deterministic `image_transform` (LLaVA's is).
    """

    def __init__(
        self,
        rows: list[Any],
        image_folder: str | Path,
        tokenizer: Any,
        template: str = "vicuna_v1",
        num_image_tokens: int = 576,
        max_length: int = 2048,
        image_transform: Callable[[Image.Image], torch.Tensor] | None = None,
        source: str = "<rows>",
        cache_size: int = 0,
    ) -> None:
        if num_image_tokens < 1 or max_length < 2:
            raise ConfigError(f"num_image_tokens={num_image_tokens} and max_length={max_length} must be positive")
        self.image_folder, self.tokenizer, self.template = Path(image_folder), tokenizer, template
        self.num_image_tokens, self.max_length, self.image_transform = num_image_tokens, max_length, image_transform
        self.image_token_id, self.source = _image_token_id(tokenizer), source
        self.cache_size, self._built = max(0, cache_size), {}  # index -> Sample (the first cache_size built)
        self.rows: list[dict[str, Any]] = []
        self.has_image: list[bool] = []
        self.lengths: list[int] = []  # LLaVA's estimate: words over all turns
        counts: Counter = Counter()
        for row in rows:
            reason = self._check_row(row)
            if reason:
                counts[reason] += 1
                continue
            self.rows.append(row)
            self.has_image.append(bool(row.get("image")))
            self.lengths.append(sum(len(t["value"].split()) for t in row["conversations"]))
        self.skipped_upfront: dict[str, int] = dict(counts)
        if not self.rows:
            raise DataError(f"LLaVA data {source} has no usable sample ({format_skipped(self.skipped_upfront)})")
        if image_transform is None and any(self.has_image):
            raise ConfigError(f"LLaVA data {source} has images but no image_transform was given")

    @classmethod
    def from_json(cls, path: str | Path, image_folder: str | Path | None = None, **kwargs: Any) -> LlavaSamples:
        """Load a `.json`/`.jsonl` file; images are relative to `image_folder` (default: the file's folder)."""
        path = Path(path)
        folder = image_folder if image_folder is not None else path.parent
        return cls(read_llava_json(path), folder, source=str(path), **kwargs)

    def __len__(self) -> int:
        return len(self.rows)

    def _check_row(self, row: Any) -> str | None:
        """Why a row is unusable before reading anything (None if it looks fine)."""
        turns = row.get("conversations") if isinstance(row, dict) else None
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            return "bad_conversation"
        image = row.get("image")
        if image is not None and not (isinstance(image, str) and image):
            return "bad_conversation"
        texts = [(t.get("from"), t.get("value") if isinstance(t.get("value"), str) else "") for t in turns]
        if image and not any(IMAGE_TOKEN in v for role, v in texts if role == "human"):
            return "no_image_token"
        if not image and any(IMAGE_TOKEN in v for _, v in texts):
            return "image_token_without_image"
        try:
            render(turns, self.template)
        except TemplateError:
            return "bad_conversation"
        return None

    def image_path(self, index: int) -> Path:
        return self.image_folder / self.rows[index]["image"]

    def build(self, index: int, transform_seed: int = 0) -> Sample | str:
        """Sample `index` ready to collate, or why it is skipped; a random transform is seeded by `transform_seed`."""
        cached = self._built.get(index)
        if cached is not None:
            return cached
        out = self._build(index, transform_seed)
        if isinstance(out, Sample) and len(self._built) < self.cache_size:
            self._built[index] = out  # collate copies its tensors, so batches never share them
        return out

    def _build(self, index: int, transform_seed: int) -> Sample | str:
        row = self.rows[index]
        if self.has_image[index] and not self.image_path(index).is_file():
            return "missing_image"
        try:
            encoded = encode(row["conversations"], self.template, self.tokenizer)
        except TemplateError:
            return "bad_conversation"
        expanded = expand_image(encoded, self.image_token_id, self.num_image_tokens, self.max_length)
        if isinstance(expanded, str):
            return expanded
        pixels = None
        if self.has_image[index]:
            try:
                image = open_rgb(self.image_path(index))
            except (OSError, ValueError, Image.DecompressionBombError):
                return "unreadable_image"
            with _seeded(transform_seed):
                pixels = self.image_transform(image)
        ids, labels = (torch.tensor(x, dtype=torch.long) for x in expanded)
        return Sample(index, ids, labels, pixels)


def collate(samples: list[Sample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sample; `pixel_values` stacks the images present (absent when there are none)."""
    length = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((len(samples), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(len(samples), length, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        input_ids[i, :n], attention_mask[i, :n], labels[i, :n] = s.input_ids, 1, s.labels
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    images = [s.pixel_values for s in samples if s.pixel_values is not None]
    if images:
        out["pixel_values"] = torch.stack(images)
    return out


def format_skipped(counts: dict[str, int], total: int | None = None) -> str:
    """One line for logs, e.g. 'skipped 3 of 665298 samples: missing_image 2, image_truncated 1'."""
    n = sum(counts.values())
    if not n:
        return "skipped no samples" if total is None else f"skipped none of {total} samples"
    of = f" of {total}" if total is not None else ""
    parts = ", ".join(f"{k} {counts[k]}" for k in sorted(counts, key=lambda k: (-counts[k], k)) if counts[k])
    return f"skipped {n}{of} samples: {parts}"


# ------------------------------------------------------------------------------------------- order
def _wrap_pad(indices: list[int], multiple: int) -> list[int]:
    """Fill the last global batch by wrapping around (as DistributedSampler pads), so every rank gets full batches."""
    short = -len(indices) % multiple
    return indices + [indices[i % len(indices)] for i in range(short)] if indices else indices


def _split_balanced(group: list[int], lengths: list[int], world_size: int, batch_size: int) -> list[list[int]]:
    """LLaVA's `split_to_even_chunks`: longest first, each to the rank with the least total length so far."""
    ordered = sorted(group, key=lambda i: -lengths[i])
    if world_size == 1:
        return [ordered]
    chunks: list[list[int]] = [[] for _ in range(world_size)]
    heap = [(0, r) for r in range(world_size)]  # (total length, rank) of the ranks that are not full yet
    for i in ordered:
        total, r = heapq.heappop(heap)
        chunks[r].append(i)
        if len(chunks[r]) < batch_size:
            heapq.heappush(heap, (total + lengths[i], r))
    return chunks


def plan_epoch(
    has_image: list[bool],
    lengths: list[int],
    batch_size: int,
    world_size: int,
    seed: int,
    epoch: int,
    group_by_modality: bool = True,
    megabatch_batches: int = 1,
) -> list[list[list[int]]]:
    """Every step's batch per rank (`[step][rank] -> indices`) of one epoch, a pure function of (seed, epoch).

    Grouped: each modality is shuffled on its own, cut into mega-batches of `megabatch_batches` global batches,
    sorted by length inside (LLaVA uses 1: sorting only balances ranks; more also shortens padding), and the
    global batches of both modalities are shuffled together, so no batch mixes image and text-only samples.
    """
    per_step = batch_size * world_size
    if group_by_modality:
        pools = [[i for i, h in enumerate(has_image) if h == m] for m in (True, False)]
    else:
        pools = [list(range(len(has_image)))]
    steps: list[list[list[int]]] = []
    for m, pool in enumerate(pools):
        if not pool:
            continue
        g = torch.Generator().manual_seed(_mix(seed, epoch, "order", m))
        order = _wrap_pad([pool[i] for i in torch.randperm(len(pool), generator=g).tolist()], per_step)
        mega = per_step * (megabatch_batches if group_by_modality else 1)
        for start in range(0, len(order), mega):
            chunk = order[start : start + mega]
            if group_by_modality:
                chunk = sorted(chunk, key=lambda i: -lengths[i])
            for s in range(0, len(chunk), per_step):
                group = chunk[s : s + per_step]
                split = _split_balanced(group, lengths, world_size, batch_size) if group_by_modality else None
                steps.append(split or [group[r * batch_size : (r + 1) * batch_size] for r in range(world_size)])
    g = torch.Generator().manual_seed(_mix(seed, epoch, "steps"))
    return [steps[i] for i in torch.randperm(len(steps), generator=g).tolist()]


# ------------------------------------------------------------------------------------------- batches
class _EpochBatches(torch.utils.data.Dataset):
    """Batch `k` of one rank's epoch, built independently of the others (so DataLoader workers can share them)."""

    def __init__(self, source: LlavaBatches, epoch: int) -> None:
        self.samples, self.pad_token_id, self.max_bad_draws = source.samples, source.pad_token_id, source.max_bad_draws
        self.seed, self.epoch, self.rank = source.seed, epoch, source.rank
        self.batches = [step[source.rank] for step in source.plan(epoch)]
        self.pools = source.pools

    def __len__(self) -> int:
        return len(self.batches)

    def _fill(self, k: int, j: int, index: int, failures: list[tuple[int, str]]) -> Sample:
        """Slot `j` of batch `k`: the planned sample, else replacements drawn from (seed, epoch, k, j).

        Replacements come from the sample's own modality; after half the draws (a modality all but empty of usable
        samples) from any, so a tiny or damaged subset mixes one batch instead of stopping the run.
        """
        same = self.pools[self.samples.has_image[index]]
        for attempt in range(self.max_bad_draws + 1):
            out = self.samples.build(index, _mix(self.seed, "augment", self.epoch, self.rank, k, j, attempt))
            if isinstance(out, Sample):
                return out
            failures.append((index, out))
            draw = _mix(self.seed, "replace", self.epoch, self.rank, k, j, attempt)
            index = same[draw % len(same)] if 2 * attempt < self.max_bad_draws else draw % len(self.samples)
        where = self.samples.image_path(index) if self.samples.has_image[index] else self.samples.source
        raise DataError(
            f"{self.max_bad_draws + 1} samples in a row were unusable (last: {failures[-1][1]}, {where}); "
            "check the image folder, max_length and num_image_tokens"
        )

    def __getitem__(self, k: int) -> dict[str, Any]:
        failures: list[tuple[int, str]] = []
        try:
            batch = [self._fill(k, j, index, failures) for j, index in enumerate(self.batches[k])]
        except DataError as exc:
            return {"_error": str(exc)}  # one line in the main process, not a worker traceback
        return {**collate(batch, self.pad_token_id), "_failures": failures}


class LlavaBatches:
    """Endless, exactly resumable per-rank batches of `LlavaSamples` (the training loop's `BatchSource`).

    Batches hold `input_ids`, `attention_mask`, `labels` ([B, L], right-padded) and `pixel_values` ([N_img, 3, H, W],
    the batch's images in order; absent when it has none). `skipped` counts bad samples first met since this object
    was built or its state loaded (up-front ones on rank 0 only), so the Trainer's sum over ranks and resumes counts
    each once per rank; `all_skipped` includes those counted before the state was saved.
    """

    def __init__(
        self,
        samples: LlavaSamples,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        group_by_modality_length: bool = True,
        megabatch_batches: int = 1,
        pad_token_id: int | None = None,
        num_workers: int = 0,
        max_bad_draws: int = 64,
    ) -> None:
        if batch_size < 1 or not 0 <= rank < world_size or megabatch_batches < 1:
            raise ConfigError(f"bad batching: batch_size={batch_size}, rank={rank}/{world_size}, "
                              f"megabatch_batches={megabatch_batches}")  # fmt: skip
        tok = samples.tokenizer
        pad = pad_token_id if pad_token_id is not None else (tok.pad_token_id if tok.pad_token_id is not None
                                                             else tok.unk_token_id)  # fmt: skip
        if pad is None:
            raise ConfigError("the tokenizer has neither a pad nor an unk token; pass pad_token_id")
        self.samples, self.batch_size, self.seed, self.rank, self.world_size = (
            samples,
            batch_size,
            seed,
            rank,
            world_size,
        )
        self.group_by_modality_length, self.megabatch_batches = group_by_modality_length, megabatch_batches
        self.pad_token_id, self.num_workers, self.max_bad_draws = int(pad), num_workers, max_bad_draws
        self.pools = {m: [i for i, h in enumerate(samples.has_image) if h == m] for m in (True, False)}
        self.epoch, self.position = 0, 0
        self._bad: dict[int, str] = {}  # every bad sample met (kept in the state, so each is counted once)
        self._counted: set[int] = set()  # bad samples found before the loaded state (already counted)
        self._upfront_counted = rank != 0  # up-front skips are reported by rank 0 only
        self._plan: tuple[int, list[list[list[int]]]] | None = None

    def plan(self, epoch: int) -> list[list[list[int]]]:
        """The epoch's batches for all ranks (`[step][rank] -> indices`), cached for the current epoch."""
        if self._plan is None or self._plan[0] != epoch:
            steps = plan_epoch(self.samples.has_image, self.samples.lengths, self.batch_size, self.world_size,
                               self.seed, epoch, self.group_by_modality_length, self.megabatch_batches)  # fmt: skip
            self._plan = (epoch, steps)
        return self._plan[1]

    def __len__(self) -> int:
        return len(self.plan(self.epoch))

    @property
    def skipped(self) -> dict[str, int]:
        """Bad samples met since construction or `load_state_dict`, by reason (the Trainer adds earlier ones)."""
        counts = Counter() if self._upfront_counted else Counter(self.samples.skipped_upfront)
        counts.update(reason for i, reason in self._bad.items() if i not in self._counted)
        return dict(counts)

    @property
    def all_skipped(self) -> dict[str, int]:
        """Every bad sample this rank knows of: the up-front ones and all met in iteration, across resumes."""
        return dict(Counter(self.samples.skipped_upfront) + Counter(self._bad.values()))

    def _signature(self) -> dict[str, Any]:
        return {"num_samples": len(self.samples), "batch_size": self.batch_size, "seed": self.seed,
                "rank": self.rank, "world_size": self.world_size, "group": self.group_by_modality_length,
                "megabatch_batches": self.megabatch_batches}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """Epoch, batches consumed in it and the bad samples found: enough to continue with the same batches."""
        return {"version": STATE_VERSION, **self._signature(), "epoch": self.epoch, "position": self.position,
                "bad": sorted(self._bad.items())}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`; the data and batching settings must be those it was saved with."""
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"LLaVA data state version {state.get('version')} is not {STATE_VERSION}")
        for key, value in self._signature().items():
            if state.get(key) != value:
                raise ConfigError(f"LLaVA data state was saved with {key}={state.get(key)!r}, this run has "
                                  f"{value!r}; resume with the same data and batch settings")  # fmt: skip
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._bad = {int(i): str(r) for i, r in state["bad"]}
        self._counted, self._upfront_counted = set(self._bad), True

    def _batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        """The raw batches of `epoch` from the current position, in order, in-process or from workers."""
        dataset = _EpochBatches(self, epoch)
        indices = range(self.position, len(dataset))
        if self.num_workers <= 0:
            yield from (dataset[k] for k in indices)
            return
        yield from torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=indices, num_workers=self.num_workers,
            generator=torch.Generator(),  # else the DataLoader draws its base seed from the global RNG
        )  # fmt: skip

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            for batch in self._batches(self.epoch):
                if "_error" in batch:
                    raise DataError(batch["_error"])
                for index, reason in batch.pop("_failures"):
                    self._bad.setdefault(int(index), str(reason))
                self.position += 1
                yield batch
            self.epoch, self.position = self.epoch + 1, 0
