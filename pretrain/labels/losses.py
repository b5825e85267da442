"""SuperClass losses over caption labels (softmax, the paper's choice, plus the Table 6 ablations) and CLIP's loss.

All take logits `[N, V]`, the sparse labels `(ids, valid)` from `khot.label_ids` and IDF weights `[V]`
(`IDFWeights.weights()`; pass ones, or IDF mode "off", for unweighted losses). Losses are computed in float32
whatever the autocast dtype of the logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from pretrain.labels.khot import khot
from pretrain.runtime.errors import ConfigError

if TYPE_CHECKING:
    from open_clip.loss import ClipLoss

# The two-way reference code masks with a finite -100 instead of -inf (no NaN gradients for empty sets).
_MASK = -100.0
# F.normalize's eps: the official L1 normalisation divides by max(sum, 1e-12).
_EPS = 1e-12


@dataclass
class LossConfig:
    """Which SuperClass loss, and the ablation losses' hyper-parameters."""

    # softmax: the paper's loss (best); bce / asl / soft_margin / two_way: the Table 6 ablations
    kind: Literal["softmax", "bce", "asl", "soft_margin", "two_way"] = "softmax"
    # ASL (Ben-Baruch et al. 2020) focusing exponent on negatives
    asl_gamma_neg: float = 4.0
    # ASL focusing exponent on positives
    asl_gamma_pos: float = 0.0
    # ASL probability margin m: negatives with p < m are ignored (their p is shifted to max(p - m, 0))
    asl_clip: float = 0.05
    # two-way loss (Kobayashi, CVPR 2023) temperature of the soft-min over positives (paper/code default 4)
    two_way_tp: float = 4.0
    # two-way loss temperature of the soft-max over negatives (paper/code default 1)
    two_way_tn: float = 1.0


class _SoftTargetCE(torch.autograd.Function):
    """−mean_n Σ_j t_nj log softmax(x_n)[ids_nj] with a hand-written backward that keeps one fp32 [N, V] buffer.

    Autograd through `logits.float()`, `logsumexp` and `gather` would hold several fp32 [N, V] tensors (the
    cast, the exp, the softmax, the scatter of the gather's gradient); here the gradient
    (softmax(x)·Σ_j t_j − scatter(t)) / N is built in place in a single fp32 buffer, then cast to x's dtype.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        acc = torch.promote_types(logits.dtype, torch.float32)  # fp32 for bf16/fp16 logits (fp64 stays fp64)
        lse = torch.logsumexp(logits.to(acc), dim=1)
        picked = logits.gather(1, ids).to(acc)
        target = target.to(acc)
        ctx.save_for_backward(logits, ids, target, lse)
        return (target.sum(dim=1) * lse - (target * picked).sum(dim=1)).mean()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, ids, target, lse = ctx.saved_tensors
        scale = grad_out / logits.shape[0]
        grad = logits.to(lse.dtype, copy=True).sub_(lse[:, None]).exp_()  # softmax, in one buffer
        grad.mul_(target.sum(dim=1, keepdim=True) * scale)
        grad.scatter_add_(1, ids, target * -scale)  # invalid slots carry t = 0, so they add nothing
        return grad.to(logits.dtype), None, None


def softmax_loss(logits: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The SuperClass loss −Σ_c ŷ_c log softmax(x)_c, ŷ = w⊙y / Σ(w⊙y), averaged over the batch, from sparse labels.

    Only the label positions are gathered, so no dense [N, V] target is built, and the backward keeps a single
    fp32 [N, V] buffer. A row whose weighted target sums to 0 (no labels, or only zero-IDF labels) has ŷ = 0 and
    contributes 0 to the sum while still counting in the batch mean, exactly like the official
    `F.normalize(targets, p=1)` formulation.
    """
    with torch.no_grad():
        w = weights.float()[ids] * valid
        target = w / w.sum(dim=1, keepdim=True).clamp_min(_EPS)
    return _SoftTargetCE.apply(logits, ids, target)


def _binary_terms(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-element IDF-weighted binary log-likelihood w_c·y·log σ(x) + (1−y)·log σ(−x), `[N, V]`."""
    return y * weights[None, :] * F.logsigmoid(x) + (1.0 - y) * F.logsigmoid(-x)


def bce_loss(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits; IDF scales each positive term, negatives weigh 1; Σ classes, mean batch."""
    return -_binary_terms(x, y, weights).sum(dim=1).mean()


def soft_margin_loss(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """PyTorch's MultiLabelSoftMarginLoss (mean over classes, then batch); IDF scales positive terms.

    With uniform weights this equals `bce_loss / V`: the two differ only in scale (which AdamW mostly ignores),
    matching their near-identical scores in the paper's Table 6 (73.6 vs 73.5).
    """
    return -_binary_terms(x, y, weights).mean(dim=1).mean()


def _focus(base: torch.Tensor, gamma: float) -> torch.Tensor | float:
    return base.pow(gamma) if gamma != 0 else 1.0


def asl_loss(
    x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, gamma_neg: float, gamma_pos: float, clip: float
) -> torch.Tensor:
    """Asymmetric loss (Ben-Baruch et al., 2020, arXiv 2009.14119), as the authors' `AsymmetricLoss`.

    L+ = (1−p)^γ+ log p, L− = p_m^γ− log(1 − p_m) with p_m = max(p − m, 0); loss = −Σ_c [w_c y L+ + (1−y) L−]
    (IDF scales the positive terms), summed over classes and averaged over the batch (the reference sums the
    batch too). The focusing factors keep their gradient, as in the reference's default.
    """
    p = torch.sigmoid(x)
    p_neg = (1.0 - p + clip).clamp(max=1.0) if clip > 0 else 1.0 - p  # 1 − p_m
    pos = y * weights[None, :] * torch.log(p.clamp(min=1e-8)) * _focus(1.0 - p, gamma_pos)
    neg = (1.0 - y) * torch.log(p_neg.clamp(min=1e-8)) * _focus(1.0 - p_neg, gamma_neg)
    return -(pos + neg).sum(dim=1).mean()


def two_way_loss(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, tp: float, tn: float) -> torch.Tensor:
    """Two-way multi-label loss (Kobayashi, CVPR 2023), as the author's `TwoWayLoss(Tp, Tn)`.

    For a set P of positive and N of negative logits, ℓ = softplus(Tn·logΣ_N exp(x/Tn) + Tp·logΣ_P exp(−x/Tp));
    it is applied sample-wise (over classes of each sample) and class-wise (over samples of each class present
    in the batch), and the two means are added. IDF: in the sample-wise soft-min each positive's exp term is
    scaled by w_c / mean(w over the row's positives), and the class-wise mean is weighted by w_c; both are
    scale-free and reduce exactly to the reference when weights are uniform.
    """
    pos = y > 0
    with torch.no_grad():
        wpos = torch.where(pos, weights[None, :].expand_as(x), torch.zeros_like(x))
        row_mean = wpos.sum(dim=1, keepdim=True) / pos.sum(dim=1, keepdim=True).clamp_min(1)
        wrow = wpos / row_mean.clamp_min(_EPS)
        pmask_sample = torch.where(wrow > 0, wrow.clamp_min(_EPS).log(), torch.full_like(x, _MASK))
        pmask_class = torch.where(pos, 0.0, _MASK)
        nmask = torch.where(pos, _MASK, 0.0)
        class_w = weights * pos.any(dim=0)
        sample_w = (wrow.sum(dim=1) > 0).float()
    p_cls = torch.logsumexp(-x / tp + pmask_class, dim=0) * tp
    n_cls = torch.logsumexp(x / tn + nmask, dim=0) * tn
    p_smp = torch.logsumexp(-x / tp + pmask_sample, dim=1) * tp
    n_smp = torch.logsumexp(x / tn + nmask, dim=1) * tn
    class_term = (F.softplus(n_cls + p_cls) * class_w).sum() / class_w.sum().clamp_min(_EPS)
    sample_term = (F.softplus(n_smp + p_smp) * sample_w).sum() / sample_w.sum().clamp_min(1.0)
    return class_term + sample_term


def superclass_loss(
    logits: torch.Tensor,
    ids: torch.Tensor,
    valid: torch.Tensor,
    weights: torch.Tensor | None,
    cfg: LossConfig | None = None,
) -> torch.Tensor:
    """The configured SuperClass loss (a scalar) of logits `[N, V]` against sparse labels and IDF weights `[V]`."""
    cfg = cfg or LossConfig()
    vocab = logits.shape[1]
    if weights is None:
        weights = torch.ones(vocab, device=logits.device)
    weights = weights.to(device=logits.device, dtype=torch.float32)
    if cfg.kind == "softmax":
        return softmax_loss(logits, ids, valid, weights)
    x, y = logits.float(), khot(ids, valid, vocab)  # the ablations use dense targets
    if cfg.kind == "bce":
        return bce_loss(x, y, weights)
    if cfg.kind == "soft_margin":
        return soft_margin_loss(x, y, weights)
    if cfg.kind == "asl":
        return asl_loss(x, y, weights, cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip)
    if cfg.kind == "two_way":
        return two_way_loss(x, y, weights, cfg.two_way_tp, cfg.two_way_tn)
    raise ConfigError(f"loss.kind: expected softmax, bce, asl, soft_margin or two_way, got {cfg.kind!r}")


def clip_loss(world_size: int = 1, rank: int = 0) -> ClipLoss:
    """OpenCLIP's symmetric InfoNCE with local loss + gather-with-grad (cost linear in the global batch)."""
    from open_clip.loss import ClipLoss

    return ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True, rank=rank, world_size=world_size)
