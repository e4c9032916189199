"""Losses on hand-computed values: soft Dice, cosine distance (eq. 1), distillation (eq. 2), PLKD (eq. 3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from plkd.losses import cosine_distance, distillation_loss, plkd_loss, screening_loss, soft_dice_loss

BIG = 40.0  # sigmoid(±40) is 0 or 1 to float32 precision


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.bool(), BIG, -BIG)


def test_soft_dice_of_known_masks() -> None:
    pred = torch.zeros(1, 1, 4, 4, 2)
    pred[0, 0, :2, :2, 0] = 1  # 4 voxels
    target = torch.zeros_like(pred)
    target[0, 0, :2, 0, 0] = 1  # 2 voxels, both inside pred
    # Dice = 2·2 / (4 + 2) = 2/3 → loss 1/3; with eps = 1: 1 - 5/7 = 2/7.
    assert soft_dice_loss(_logits(pred), target, eps=0.0).item() == pytest.approx(1 / 3, abs=1e-6)
    assert soft_dice_loss(_logits(pred), target, eps=1.0).item() == pytest.approx(2 / 7, abs=1e-6)
    assert soft_dice_loss(_logits(target), target, eps=0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_dice_on_empty_targets() -> None:
    empty = torch.zeros(1, 1, 3, 3, 3)
    assert soft_dice_loss(_logits(empty), empty).item() == pytest.approx(0.0, abs=1e-6)
    # 27 voxels predicted on an empty target: 1 - 1/(27 + 1).
    assert soft_dice_loss(_logits(torch.ones_like(empty)), empty).item() == pytest.approx(27 / 28, abs=1e-6)


def test_soft_dice_is_averaged_per_sample() -> None:
    target = torch.zeros(2, 1, 2, 2, 2)
    target[:, 0, 0, 0, 0] = 1
    pred = target.clone()
    pred[1] = 0  # sample 1 misses its voxel entirely: loss 1 - 1/2 with eps = 1
    assert soft_dice_loss(_logits(pred), target).item() == pytest.approx((0 + 0.5) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        soft_dice_loss(pred, target[:1])


def test_soft_dice_uses_probabilities() -> None:
    logits = torch.zeros(1, 1, 1, 1, 2)  # p = 0.5 twice
    target = torch.tensor([1.0, 0.0]).view(1, 1, 1, 1, 2)
    # (2·0.5 + 0) / (1 + 1 + 0) = 0.5
    assert soft_dice_loss(logits, target, eps=0.0).item() == pytest.approx(0.5)


def test_cosine_distance_hand_values() -> None:
    a = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).view(1, 1, 2, 2, 1)
    b = torch.tensor([[0.0, 1.0, 0.0, 0.0]]).view(1, 1, 2, 2, 1)
    assert cosine_distance(a, b).item() == pytest.approx(1.0)  # orthogonal
    assert cosine_distance(a, a).item() == pytest.approx(0.0)  # identical
    assert cosine_distance(a, 3 * a).item() == pytest.approx(0.0)  # the scale does not matter
    assert cosine_distance(a, -a).item() == pytest.approx(2.0)  # opposite
    c = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).view(1, 1, 2, 2, 1)
    assert cosine_distance(a, c).item() == pytest.approx(1 - 1 / math.sqrt(2))
    # Per-sample distance (whole flattened map), then the batch mean: (0 + 1) / 2.
    assert cosine_distance(torch.cat([a, a]), torch.cat([a, b])).item() == pytest.approx(0.5)


def test_cosine_distance_flattens_channels_and_space_together() -> None:
    t = torch.randn(3, 4, 2, 2, 2)
    s = torch.randn(3, 4, 2, 2, 2)
    expected = (1 - F.cosine_similarity(t.reshape(3, -1), s.reshape(3, -1), dim=1)).mean()
    assert cosine_distance(t, s).item() == pytest.approx(expected.item(), abs=1e-6)


def test_cosine_distance_detaches_the_teacher() -> None:
    t = torch.randn(2, 3, 2, 2, 2, requires_grad=True)
    s = torch.randn(2, 3, 2, 2, 2, requires_grad=True)
    cosine_distance(t, s).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shape"):
        cosine_distance(t, s[:, :2])


def _feats(g: torch.Tensor, s: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"f_g": g, "f_s": s}


def test_distillation_and_plkd_totals() -> None:
    a = torch.tensor([1.0, 0.0]).view(1, 1, 2, 1, 1)
    b = torch.tensor([0.0, 1.0]).view(1, 1, 2, 1, 1)
    teacher, student = _feats(a, a), _feats(b, -a)  # d_g = 1, d_s = 2
    assert distillation_loss(teacher, student).item() == pytest.approx(0.5 * 1 + 0.5 * 2)
    assert distillation_loss(teacher, student, lambda_g=1.0, lambda_s=0.0).item() == pytest.approx(1.0)

    target = torch.zeros(1, 1, 2, 2, 2)
    target[0, 0, 0, 0, 0] = 1
    pred = torch.zeros_like(target)  # misses the voxel: dice loss 1 - 1/2 = 0.5 (eps = 1)
    total, logs = plkd_loss(_logits(pred), target, teacher, student, alpha=0.7, beta=0.3)
    assert set(logs) == {"dice", "distill", "d_g", "d_s", "total"}
    assert logs["dice"] == pytest.approx(0.5)
    assert logs["d_g"] == pytest.approx(1.0)
    assert logs["d_s"] == pytest.approx(2.0)
    assert logs["distill"] == pytest.approx(1.5)
    assert total.item() == pytest.approx(0.7 * 0.5 + 0.3 * 1.5)
    assert logs["total"] == pytest.approx(total.item())


def test_plkd_loss_without_teacher_is_weighted_dice() -> None:
    target = torch.zeros(1, 1, 2, 2, 2)
    total, logs = plkd_loss(torch.zeros_like(target), target, None, None, alpha=0.7, beta=0.3)
    assert logs["distill"] == 0.0
    assert total.item() == pytest.approx(0.7 * logs["dice"])


def test_screening_loss_hand_values() -> None:
    logit = torch.tensor([0.0, 0.0])
    target = torch.tensor([1.0, 0.0])
    # p_t = 0.5 for both: BCE = ln 2, focal factor (1 - 0.5)^2 = 1/4.
    assert screening_loss(logit, target, gamma=0.0).item() == pytest.approx(math.log(2))
    assert screening_loss(logit, target, gamma=2.0).item() == pytest.approx(0.25 * math.log(2))
    # pos_weight 3 weighs the positive three times: (3 + 1) / 2 × ln 2.
    assert screening_loss(logit, target, gamma=0.0, pos_weight=3.0).item() == pytest.approx(2 * math.log(2))


def test_screening_loss_focuses_on_hard_examples() -> None:
    easy = screening_loss(torch.tensor([4.0]), torch.tensor([1.0]))
    hard = screening_loss(torch.tensor([-4.0]), torch.tensor([1.0]))
    bce_easy = F.binary_cross_entropy_with_logits(torch.tensor([4.0]), torch.tensor([1.0]))
    assert easy < 1e-3 * bce_easy  # (1 - 0.982)^2 ≈ 3e-4
    assert hard.item() == pytest.approx(
        F.binary_cross_entropy_with_logits(torch.tensor([-4.0]), torch.tensor([1.0])).item() * (1 - 0.01799) ** 2,
        rel=1e-3,
    )
