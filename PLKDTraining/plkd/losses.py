"""Losses: soft Dice, cosine feature distance (eq. 1), distillation loss (eq. 2), PLKD total (eq. 3).

Equation numbers refer to Xia et al. (PLKD). ``logits`` are raw network outputs; every loss
applies the sigmoid itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F  # noqa: N812 (the usual alias)

#: The paper's weights: λ1 = λ2 = 0.5 (eq. 2); α = 0.7, β = 0.3 (Table 5, best T2* setting).
DEFAULT_LAMBDA_G = 0.5
DEFAULT_LAMBDA_S = 0.5
DEFAULT_ALPHA = 0.7
DEFAULT_BETA = 0.3


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss ``1 - (2 Σ p t + eps) / (Σ p + Σ t + eps)`` per sample, averaged over the batch.

    ``p = sigmoid(logits)``; ``target`` is a {0, 1} (or soft) mask of the same shape. The
    smoothing ``eps`` makes an empty prediction on an empty target cost ~0 (a negative candidate
    patch predicted empty is correct), while any predicted mass on an empty target costs
    ``Σp / (Σp + eps)``.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    p = torch.sigmoid(logits.float()).flatten(1)  # sums over ~50k voxels: float32 even under autocast
    t = target.to(p.dtype).flatten(1)
    dice = (2 * (p * t).sum(dim=1) + eps) / (p.sum(dim=1) + t.sum(dim=1) + eps)
    return (1 - dice).mean()


def cosine_distance(f_t: torch.Tensor, f_s: torch.Tensor, detach_teacher: bool = True) -> torch.Tensor:
    """Eq. 1: ``d = 1 - cos(f_T, f_S)`` between each sample's flattened feature maps, batch mean.

    Ranges from 0 (same direction) through 1 (orthogonal) to 2 (opposite). The teacher's
    features are detached here by default so the teacher is never updated through this loss,
    whatever the caller does.
    """
    if f_t.shape != f_s.shape:
        raise ValueError(f"teacher {tuple(f_t.shape)} and student {tuple(f_s.shape)} features differ in shape")
    if detach_teacher:
        f_t = f_t.detach()
    cos = F.cosine_similarity(f_t.flatten(1).float(), f_s.flatten(1).float(), dim=1, eps=1e-8)
    return (1 - cos).mean()


def distillation_loss(
    t: Mapping[str, torch.Tensor],
    s: Mapping[str, torch.Tensor],
    lambda_g: float = DEFAULT_LAMBDA_G,
    lambda_s: float = DEFAULT_LAMBDA_S,
) -> torch.Tensor:
    """Eq. 2: ``λ_g d(f_T,g, f_S,g) + λ_s d(f_T,s, f_S,s)`` from teacher/student forward dicts."""
    return lambda_g * cosine_distance(t["f_g"], s["f_g"]) + lambda_s * cosine_distance(t["f_s"], s["f_s"])


def plkd_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    t_feats: Mapping[str, torch.Tensor] | None,
    s_feats: Mapping[str, torch.Tensor] | None,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    lambda_g: float = DEFAULT_LAMBDA_G,
    lambda_s: float = DEFAULT_LAMBDA_S,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 3: ``α · SoftDice(student logits, target) + β · L_distill``.

    Returns the differentiable total and a log dict ``{"dice", "distill", "d_g", "d_s", "total"}``
    of floats. With ``t_feats`` or ``s_feats`` None (no teacher) the distillation terms are 0 and
    the total is ``α · dice``.
    """
    dice = soft_dice_loss(logits, target)
    if t_feats is None or s_feats is None:
        zero = dice.new_zeros(())
        d_g, d_s = zero, zero
    else:
        d_g = cosine_distance(t_feats["f_g"], s_feats["f_g"])
        d_s = cosine_distance(t_feats["f_s"], s_feats["f_s"])
    distill = lambda_g * d_g + lambda_s * d_s
    total = alpha * dice + beta * distill
    logs = {
        "dice": float(dice.detach()),
        "distill": float(distill.detach()),
        "d_g": float(d_g.detach()),
        "d_s": float(d_s.detach()),
        "total": float(total.detach()),
    }
    return total, logs


def screening_loss(
    logit: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, pos_weight: float = 1.0
) -> torch.Tensor:
    """Focal binary cross-entropy for the screening FCN's patch logits ``(N,)`` (mean over the batch).

    Screening patches are mostly negative and most negatives are easy; the focal factor
    ``(1 - p_t)**gamma`` down-weights those so the hard ones (mimics, vessels) drive training.
    ``pos_weight`` further up-weights positive patches. ``gamma=0`` gives weighted BCE.
    """
    if logit.shape != target.shape:
        raise ValueError(f"logit {tuple(logit.shape)} and target {tuple(target.shape)} differ in shape")
    target = target.to(logit.dtype)
    bce = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    p_t = torch.exp(-bce)  # probability given to the true class
    weight = 1 + (pos_weight - 1) * target
    return (weight * (1 - p_t) ** gamma * bce).mean()
