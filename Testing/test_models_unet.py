"""E²U-Net (all ablation variants) and the plain 3D U-Net: shapes, feature taps, 2D levels, FCM, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from plkd.losses import plkd_loss, soft_dice_loss
from plkd.models import E2UNet, UNet3D, build_network, count_macs, count_parameters, network_config, patch_probability

PATCH = (16, 16, 8)  # smallest patch every variant accepts at depth 4 (X, Y multiple of 8, Z of 8 for unet3d)


def _net(seed: int = 0, **kw) -> E2UNet:
    torch.manual_seed(seed)
    return E2UNet(base_channels=4, **kw)


@pytest.mark.parametrize("conv_mode", ["2d", "3d", "hybrid"])
@pytest.mark.parametrize("fcm", [True, False])
def test_e2unet_variants_output_shapes_and_taps(conv_mode: str, fcm: bool) -> None:
    net = _net(conv_mode=conv_mode, fcm=fcm)
    out = net(torch.randn(2, 1, *PATCH))
    assert set(out) == {"logits", "f_g", "f_s"}
    assert out["logits"].shape == (2, 1, *PATCH)
    # Level 2 follows one in-plane-only pooling: Z keeps its 8 slices in every mode.
    assert out["f_g"].shape == (2, 8, 8, 8, 8)
    # Bottleneck: 2D mode never pools Z; hybrid and 3D halve it at each 3D level.
    expected_z = PATCH[2] if conv_mode == "2d" else PATCH[2] // 4
    assert out["f_s"].shape == (2, 32, 2, 2, expected_z)


def test_e2unet_default_size_on_paper_patch() -> None:
    net = E2UNet()
    out = net(torch.randn(1, 1, 48, 48, 24))
    assert out["logits"].shape == (1, 1, 48, 48, 24)
    assert out["f_g"].shape == (1, 32, 24, 24, 24)
    assert out["f_s"].shape == (1, 128, 6, 6, 6)
    assert net.size_multiple == (8, 8, 4)


def test_unet3d_shapes_and_taps() -> None:
    torch.manual_seed(0)
    net = UNet3D(base_channels=4)
    out = net(torch.randn(2, 1, *PATCH))
    assert out["logits"].shape == (2, 1, *PATCH)
    assert out["f_g"].shape == (2, 8, 8, 8, 4)  # level 2 after isotropic pooling
    assert out["f_s"].shape == (2, 32, 2, 2, 1)


def test_patch_size_not_a_multiple_is_refused() -> None:
    with pytest.raises(ValueError, match="not a multiple"):
        _net()(torch.randn(1, 1, 16, 16, 6))


@pytest.mark.parametrize("fcm", [True, False])
def test_hybrid_2d_levels_are_in_plane_only(fcm: bool) -> None:
    net = _net(conv_mode="hybrid", fcm=fcm).eval()
    x = torch.randn(1, 1, *PATCH)
    y = x.clone()
    y[..., 5] += torch.randn(PATCH[:2])  # perturb slice z = 5 only
    with torch.no_grad():
        diff = (net(x)["f_g"] - net(y)["f_g"]).abs().amax(dim=(0, 1, 2, 3))
    assert diff[5] > 1e-3
    assert torch.all(diff[torch.arange(PATCH[2]) != 5] == 0)


def test_3d_levels_mix_slices() -> None:
    # The contrast to the test above: with 3D convolutions the perturbation reaches neighbouring slices.
    net = _net(conv_mode="3d", fcm=False).eval()
    x = torch.randn(1, 1, *PATCH)
    y = x.clone()
    y[..., 5] += torch.randn(PATCH[:2])
    with torch.no_grad():
        diff = (net(x)["f_g"] - net(y)["f_g"]).abs().amax(dim=(0, 1, 2, 3))
    assert diff[4] > 1e-3 and diff[6] > 1e-3


def test_fcm_changes_output_and_its_parameters_learn() -> None:
    with_fcm, without = _net(seed=3, fcm=True), _net(seed=3, fcm=False)
    # Give both the same shared weights so that only the FCM branches differ.
    missing, unexpected = with_fcm.load_state_dict(without.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(k.startswith(("fcm_down.", "fcm_up.")) for k in missing)
    x = torch.randn(2, 1, *PATCH)
    out = with_fcm(x)["logits"]
    assert not torch.allclose(out, without(x)["logits"], atol=1e-4)
    out.square().mean().backward()
    for name, p in with_fcm.named_parameters():
        if name.startswith("fcm_"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def _ball_batch(n: int, seed: int, n_empty: int = 0, margin: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy patches with one dark ball (radius 2) each, then ``n_empty`` noise-only patches; and the masks.

    Ball centres are at least ``margin`` voxels (at most half the Z size less one) from each face.
    """
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in PATCH], indexing="ij"))
    images, masks = [], []
    for i in range(n + n_empty):
        centre = torch.tensor(
            [
                torch.randint(min(margin, s // 2 - 1), s - min(margin, s // 2 - 1), (1,), generator=g).item()
                for s in PATCH
            ],
            dtype=torch.float32,
        )
        mask = (((grid - centre.view(3, 1, 1, 1)) ** 2).sum(0) <= 4.0) & (i < n)
        images.append(torch.randn(PATCH, generator=g) * 0.3 - 3.0 * mask)
        masks.append(mask.float())
    return torch.stack(images)[:, None], torch.stack(masks)[:, None]


@pytest.mark.parametrize("kind", ["e2unet", "unet3d"])
def test_a_few_steps_learn_to_segment_a_dark_ball(kind: str) -> None:
    torch.manual_seed(0)
    net = build_network(kind, base_channels=4)
    x, t = _ball_batch(4, seed=1, n_empty=2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    losses = []
    for _ in range(30):
        loss = soft_dice_loss(net(x)["logits"], t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    # Unseen patches with the ball near the centre (where patch_probability looks): the ball is
    # segmented and the patch score separates a ball from noise alone.
    net.eval()
    x_new, t_new = _ball_batch(2, seed=2, n_empty=2, margin=6)
    with torch.no_grad():
        logits = net(x_new)["logits"]
    dice = 1 - soft_dice_loss(logits[:2], t_new[:2], eps=0).item()
    assert dice > 0.6
    score = patch_probability(logits)
    assert score[:2].min() > 0.5 > score[2:].max()


def test_plkd_loss_trains_student_towards_frozen_teacher() -> None:
    teacher, student = _net(seed=1).eval(), _net(seed=2)
    x, t = _ball_batch(2, seed=5)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    first = last = None
    for _ in range(10):
        with torch.no_grad():
            t_out = teacher(x)
        s_out = student(x)
        loss, logs = plkd_loss(s_out["logits"], t, t_out, s_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first or logs
        last = logs
    assert last["distill"] < first["distill"]
    assert last["total"] < first["total"]
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize(
    ("kind", "hparams"),
    [
        ("e2unet", {"base_channels": 4, "conv_mode": "2d", "fcm": False}),
        ("e2unet", {"base_channels": 4, "depth": 3, "conv_mode": "3d"}),
        ("unet3d", {"base_channels": 4, "depth": 3}),
        ("screening_fcn", {"width": 4}),
    ],
)
def test_network_config_round_trip(kind: str, hparams: dict) -> None:
    torch.manual_seed(0)
    net = build_network(kind, **hparams)
    cfg = network_config(net)
    assert cfg["kind"] == kind
    assert {k: cfg["hparams"][k] for k in hparams} == hparams
    rebuilt = build_network(**cfg)
    rebuilt.load_state_dict(net.state_dict())  # strict: identical architecture
    x = torch.randn(1, 1, 16, 16, 8)
    a, b = net.eval()(x), rebuilt.eval()(x)
    a = a["logits"] if isinstance(a, dict) else a
    b = b["logits"] if isinstance(b, dict) else b
    assert torch.equal(a, b)


def test_build_network_rejects_unknown_kind_and_hparams() -> None:
    from plkd.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown network kind"):
        build_network("resnet")
    with pytest.raises(ConfigError, match="unknown hyper-parameter"):
        build_network("e2unet", widht=3)
    with pytest.raises(ConfigError, match="conv_mode"):
        build_network("e2unet", conv_mode="2.5d")


def test_size_figures_count_convolutions() -> None:
    net = _net(conv_mode="2d", fcm=False)
    params = count_parameters(net)
    assert params == sum(p.numel() for p in net.parameters())
    # First convolution alone: 4 output channels × 16·16·8 voxels × (1 input × 3·3·1 kernel).
    first = 4 * 16 * 16 * 8 * 9
    assert count_macs(net, PATCH) > first
    assert count_macs(net, (32, 32, 8)) == 4 * count_macs(net, PATCH)  # linear in the voxel count


def test_slice_instance_norm_equals_2d_instance_norm_per_slice() -> None:
    from plkd.models.blocks import SliceInstanceNorm

    norm = SliceInstanceNorm(3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        norm.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    x = torch.randn(2, 3, 5, 6, 4) * 3 + 1
    reference = torch.stack(
        [F.instance_norm(x[..., z], weight=norm.weight, bias=norm.bias, eps=norm.eps) for z in range(4)], dim=-1
    )
    assert torch.allclose(norm(x), reference, atol=1e-5)


def test_patch_probability_soft_top_k_in_the_centre() -> None:
    big = 40.0
    logits = torch.full((4, 1, 16, 16, 8), -big)
    logits[0, 0, 8, 8, 4] = big  # one noisy voxel: 1/4 of the top-4 mean
    logits[1, 0, 7:9, 7:9, 4] = big  # a 4-voxel lesion at the centre
    logits[2, 0, 0:2, 0:2, 0] = big  # a lesion in the corner, outside the central half
    prob = patch_probability(logits)
    assert prob.shape == (4,)
    assert prob.tolist() == pytest.approx([0.25, 1.0, 0.0, 0.0], abs=1e-6)
    assert patch_probability(logits[:, 0], k=1)[0].item() == pytest.approx(1.0)  # (N, X, Y, Z) accepted
