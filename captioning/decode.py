"""Batched greedy and beam search from prefix embeddings, with the LM's KV cache (`past_key_values`).

The prefix goes in once as `inputs_embeds`; every later step feeds one token id per sequence and reuses the
cache. Decoding stops at EOS or at a stop token ('.' as ClipCap) or after `max_tokens` (ClipCap: 67). Beam
search ranks beams by length-normalised log-probability, as ClipCap's `generate_beam`; with beam 1 it is greedy.
Any LM works whose forward takes `inputs_embeds` / `input_ids` + `past_key_values` and returns `.logits` and
`.past_key_values` (an HF Cache with `reorder_cache`, or nested tuples of tensors with the batch first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class DecodeConfig:
    beam: int = 5  # beam width; 1 = greedy
    max_tokens: int = 67  # ClipCap's entry_length
    stop: str = "."  # a token that ends a caption (besides EOS); "" = EOS only
    batch_size: int = 64  # images decoded together


def _reorder(past: Any, index: torch.Tensor) -> Any:
    """The cache rows `index` (beam re-ranking / expansion), for HF caches or nested tuples of tensors."""
    if hasattr(past, "reorder_cache"):
        past.reorder_cache(index)
        return past
    if isinstance(past, torch.Tensor):
        return past.index_select(0, index.to(past.device))
    if isinstance(past, (tuple, list)):
        return type(past)(_reorder(p, index) for p in past)
    return past


def _step(lm: nn.Module, past: Any, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
    out = lm(input_ids=ids[:, None], past_key_values=past, use_cache=True)
    return torch.log_softmax(out.logits[:, -1].float(), dim=-1), out.past_key_values


def _start(lm: nn.Module, prefix: torch.Tensor) -> tuple[torch.Tensor, Any]:
    out = lm(inputs_embeds=prefix, use_cache=True)
    return torch.log_softmax(out.logits[:, -1].float(), dim=-1), out.past_key_values


def _trim(seq: list[int], stop_ids: set[int], eos: int | None) -> list[int]:
    """Tokens up to the first stop (a stop token is kept, EOS is dropped)."""
    out = []
    for t in seq:
        if t == eos:
            break
        out.append(t)
        if t in stop_ids:
            break
    return out


@torch.no_grad()
def greedy_search(
    lm: nn.Module, prefix: torch.Tensor, max_tokens: int, stop_ids: set[int], eos: int | None
) -> list[list[int]]:
    """Argmax decoding for a batch of prefixes [B, P, E]; token ids per sequence."""
    ends = set(stop_ids) | ({eos} if eos is not None else set())
    logp, past = _start(lm, prefix)
    done = torch.zeros(prefix.shape[0], dtype=torch.bool, device=prefix.device)
    seqs: list[torch.Tensor] = []
    for _ in range(max_tokens):
        tok = logp.argmax(-1)
        seqs.append(tok)
        done |= torch.isin(tok, torch.tensor(sorted(ends), device=tok.device))
        if bool(done.all()) or len(seqs) == max_tokens:
            break
        logp, past = _step(lm, past, tok)
    rows = torch.stack(seqs, 1).tolist()
    return [_trim(r, stop_ids, eos) for r in rows]


@torch.no_grad()
def beam_search(
    lm: nn.Module, prefix: torch.Tensor, beam: int, max_tokens: int, stop_ids: set[int], eos: int | None
) -> list[list[int]]:
    """Length-normalised beam search (ClipCap's `generate_beam`) for a batch of prefixes; the best beam each."""
    b, k = prefix.shape[0], beam
    dev = prefix.device
    ends = torch.tensor(sorted(set(stop_ids) | ({eos} if eos is not None else set())), device=dev)
    logp, past = _start(lm, prefix)  # [B, V]
    vocab = logp.shape[-1]
    k = min(k, vocab)
    scores, tok = logp.topk(k, dim=-1)  # [B, K]
    past = _reorder(past, torch.arange(b, device=dev).repeat_interleave(k))
    seqs = tok.reshape(b * k, 1)
    scores = scores.reshape(b * k)
    lengths = torch.ones(b * k, device=dev)
    done = torch.isin(seqs[:, 0], ends)
    for _ in range(max_tokens - 1):
        if bool(done.all()):
            break
        logp, past = _step(lm, past, seqs[:, -1])
        # a finished beam continues with one free token (id 0, score and length unchanged), as ClipCap
        logp[done] = float("-inf")
        logp[done, 0] = 0.0
        new_len = lengths + (~done).float()
        cand = (scores[:, None] + logp) / new_len[:, None]  # [B*K, V], length-normalised
        best, flat = cand.view(b, k * vocab).topk(k, dim=-1)  # [B, K]
        src = (flat // vocab) + torch.arange(b, device=dev)[:, None] * k
        src, nxt = src.reshape(-1), (flat % vocab).reshape(-1)
        scores = best.reshape(-1) * new_len[src]
        lengths = new_len[src]
        prev_done = done[src]
        seqs = torch.cat([seqs[src], nxt[:, None]], dim=1)
        done = prev_done | torch.isin(nxt, ends)
        past = _reorder(past, src)
    final = (scores / lengths).view(b, k)
    pick = final.argmax(-1) + torch.arange(b, device=dev) * k
    return [_trim(seqs[i].tolist(), stop_ids, eos) for i in pick.tolist()]


def stop_token_ids(tokenizer: Any, stop: str) -> set[int]:
    """Ids of the stop string when it is one token (GPT-2: '.'), else none."""
    if not stop:
        return set()
    ids = tokenizer.encode(stop, add_special_tokens=False)
    return {ids[0]} if len(ids) == 1 else set()


@torch.no_grad()
def caption_features(model: nn.Module, tokenizer: Any, features: torch.Tensor, cfg: DecodeConfig) -> list[str]:
    """Captions for image features (pooled [N, D] or tokens [N, T, D]) with a ClipCapModel, in batches."""
    device = next(model.parameters()).device
    stop, eos = stop_token_ids(tokenizer, cfg.stop), tokenizer.eos_token_id
    model.eval()
    out: list[str] = []
    for i in range(0, features.shape[0], cfg.batch_size):
        prefix = model.prefix(features[i : i + cfg.batch_size].to(device).float())
        if cfg.beam <= 1:
            seqs = greedy_search(model.lm, prefix, cfg.max_tokens, stop, eos)
        else:
            seqs = beam_search(model.lm, prefix, cfg.beam, cfg.max_tokens, stop, eos)
        out += [tokenizer.decode(s, skip_special_tokens=True).strip() for s in seqs]
    return out
