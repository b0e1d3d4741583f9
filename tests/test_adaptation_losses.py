"""The maths of the domain-adaptation losses (``transferkit.adaptation.losses``), each checked so that it can fail.

Every test uses small random tensors; where a formula can be written another way (loops, numpy), the loss is
compared with that independent version.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferkit.adaptation.losses import (
    KERNEL_MULTIPLIERS,
    DomainDiscriminator,
    GradientReversal,
    RandomizedMultilinearMap,
    certainty_weights,
    coral_loss,
    covariance,
    dann_schedule,
    domain_accuracy,
    domain_adversarial_loss,
    entropy,
    information_maximization,
    joint_mmd,
    mcc_loss,
    mk_mmd,
    multi_kernel,
    multilinear_map,
    reverse_gradient,
)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- gradient reversal and the DANN schedule -------------------------------------------------------------------
def test_gradient_reversal_is_identity_forward_and_flips_and_scales_the_gradient() -> None:
    x = _randn(5, 3).requires_grad_(True)
    w = _randn(5, 3, seed=1)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.3 * w)
    # the module, with its coefficient changed between passes, as DANN's schedule does
    grl = GradientReversal()
    for coeff in (0.0, 1.0, 2.5):
        x.grad = None
        grl.coeff = coeff
        (grl(x) * w).sum().backward()
        assert torch.allclose(x.grad, -coeff * w)
    # a discriminator behind the layer gets its normal gradient; what is before it gets the opposite
    lin = torch.nn.Linear(3, 1)
    x.grad = None
    lin(reverse_gradient(x, 1.0)).sum().backward()
    g_rev = x.grad.clone()
    x.grad = None
    lin(x).sum().backward()
    assert torch.allclose(g_rev, -x.grad)


def test_dann_schedule_rises_from_zero_to_about_one() -> None:
    values = [dann_schedule(p) for p in np.linspace(0, 1, 11)]
    assert values[0] == 0.0
    assert values[-1] == pytest.approx(1.0, abs=1e-4)
    assert all(b > a for a, b in zip(values, values[1:]))
    assert dann_schedule(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_schedule(0.1, gamma=1.0) == pytest.approx(2 / (1 + math.exp(-0.1)) - 1)
    assert dann_schedule(2.0) == dann_schedule(1.0)  # progress is clipped to [0, 1]


# --- discriminator and adversarial loss ------------------------------------------------------------------------
def test_domain_adversarial_loss_values_and_weights() -> None:
    zeros = torch.zeros(4)
    assert domain_adversarial_loss(zeros, zeros).item() == pytest.approx(math.log(2))
    right = domain_adversarial_loss(torch.full((4,), 20.0), torch.full((4,), -20.0))
    wrong = domain_adversarial_loss(torch.full((4,), -20.0), torch.full((4,), 20.0))
    assert right.item() < 1e-6 and wrong.item() == pytest.approx(20.0, rel=1e-3)
    # weights: an example with weight 0 does not count; weights are normalised within each domain
    d_s = torch.tensor([20.0, -20.0])
    d_t = torch.tensor([-20.0, -20.0])
    assert domain_adversarial_loss(d_s, d_t, torch.tensor([1.0, 0.0]), torch.ones(2)).item() < 1e-6
    assert domain_adversarial_loss(d_s, d_t, torch.tensor([3.0, 3.0]), torch.ones(2)).item() == pytest.approx(
        domain_adversarial_loss(d_s, d_t).item())
    assert domain_accuracy(d_s, d_t).item() == pytest.approx(0.75)


def test_discriminator_learns_to_tell_two_domains_apart() -> None:
    torch.manual_seed(0)
    src, tgt = _randn(64, 8) + 1.5, _randn(64, 8, seed=1) - 1.5
    disc = DomainDiscriminator(8, hidden=16, dropout=0.1)
    assert disc(src).shape == (64,)
    opt = torch.optim.Adam(disc.parameters(), 1e-2)
    for _ in range(40):
        loss = domain_adversarial_loss(disc(src), disc(tgt))
        opt.zero_grad()
        loss.backward()
        opt.step()
    disc.eval()
    assert domain_accuracy(disc(src), disc(tgt)).item() > 0.95
    assert isinstance(DomainDiscriminator(8, 16, batch_norm=True).net[1], torch.nn.BatchNorm1d)


# --- CDAN --------------------------------------------------------------------------------------------------------
def test_multilinear_map_is_the_flattened_outer_product() -> None:
    f, g = _randn(4, 5), torch.softmax(_randn(4, 3, seed=1), 1)
    t = multilinear_map(f, g)
    assert t.shape == (4, 15)
    for n in range(4):
        for c in range(3):
            for j in range(5):
                assert t[n, c * 5 + j].item() == pytest.approx((g[n, c] * f[n, j]).item(), rel=1e-5)


def test_randomized_multilinear_map_preserves_inner_products() -> None:
    f, g = _randn(40, 32), torch.softmax(2 * _randn(40, 10, seed=1), 1)
    exact = multilinear_map(f, g)
    rmap = RandomizedMultilinearMap(32, 10, output_dim=8192, seed=3)
    approx = rmap(f, g)
    assert approx.shape == (40, 8192)
    true_ip = (exact @ exact.T).flatten()
    est_ip = (approx @ approx.T).flatten()
    assert np.corrcoef(true_ip.numpy(), est_ip.numpy())[0, 1] > 0.95
    norms_true, norms_est = exact.pow(2).sum(1), approx.pow(2).sum(1)
    assert ((norms_est - norms_true).abs() / norms_true).mean().item() < 0.1
    # a small k is a poor approximation: the test can tell the difference
    small = RandomizedMultilinearMap(32, 10, output_dim=4, seed=3)(f, g)
    assert np.corrcoef(true_ip.numpy(), (small @ small.T).flatten().numpy())[0, 1] < 0.9
    # the random matrices are buffers (saved with the method) and reproducible from the seed
    again = RandomizedMultilinearMap(32, 10, output_dim=8192, seed=3)
    assert set(dict(rmap.named_buffers())) == {"r_f", "r_g"} and torch.equal(again(f, g), approx)


def test_entropy_and_certainty_weights() -> None:
    uniform = torch.full((3, 4), 0.25)
    onehot = torch.eye(4)[:3]
    assert torch.allclose(entropy(uniform), torch.full((3,), math.log(4)))
    assert entropy(onehot).abs().max().item() < 1e-6
    w = certainty_weights(torch.cat([uniform, onehot]))
    assert w.mean().item() == pytest.approx(1.0)
    raw = torch.tensor([1 + 1 / 4] * 3 + [2.0] * 3)  # 1 + exp(-H): 1 + 1/C for uniform, 2 for one-hot
    assert torch.allclose(w, raw / raw.mean(), atol=1e-5)
    assert torch.allclose(certainty_weights(uniform), torch.ones(3))


# --- MMD ---------------------------------------------------------------------------------------------------------
def _mmd_by_loops(s: np.ndarray, t: np.ndarray) -> float:
    x = np.concatenate([s, t])
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    n = len(x)
    base = d.sum() / (n * (n - 1))
    k = np.mean([np.exp(-d / (m * base)) for m in KERNEL_MULTIPLIERS], axis=0)
    ns = len(s)
    return k[:ns, :ns].mean() + k[ns:, ns:].mean() - 2 * k[:ns, ns:].mean()


def test_mk_mmd_matches_the_formula_is_zero_for_identical_and_grows_with_the_shift() -> None:
    s, t = _randn(30, 6), _randn(20, 6, seed=1) + 0.7
    assert mk_mmd(s, t).item() == pytest.approx(_mmd_by_loops(s.double().numpy(), t.double().numpy()), rel=1e-4)
    assert abs(mk_mmd(s, s).item()) < 1e-6
    same = mk_mmd(_randn(64, 8), _randn(64, 8, seed=1)).item()  # two samples of one distribution
    values = [mk_mmd(_randn(64, 8), _randn(64, 8, seed=1) + shift).item() for shift in (0.25, 0.5, 1.0, 2.0)]
    assert values[0] > same and all(b > a for a, b in zip(values, values[1:]))
    assert values[2] > 10 * same
    k = multi_kernel(torch.cat([s, t]))
    assert torch.allclose(k.diagonal(), torch.ones(50)) and torch.allclose(k, k.T)


def test_mk_mmd_gradient_pulls_the_target_towards_the_source() -> None:
    s = _randn(32, 4)
    t = (_randn(32, 4, seed=1) + 2.0).requires_grad_(True)
    opt = torch.optim.SGD([t], lr=10.0)  # each point's gradient carries 1/n^2 of the kernel sums: a large step
    first = mk_mmd(s, t).item()
    gap = (t.detach().mean(0) - s.mean(0)).norm().item()
    for _ in range(200):
        loss = mk_mmd(s, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert mk_mmd(s, t).item() < 0.1 * first
    assert (t.detach().mean(0) - s.mean(0)).norm().item() < 0.3 * gap


def test_joint_mmd_of_one_layer_is_mk_mmd_and_sees_joint_shifts() -> None:
    s, t = _randn(20, 5), _randn(20, 5, seed=1) + 0.5
    assert joint_mmd([s], [t]).item() == pytest.approx(mk_mmd(s, t).item(), rel=1e-5)
    # same marginals, different pairing: two feature clusters whose class labels are swapped in the target
    f = torch.cat([_randn(20, 3) + 2.0, _randn(20, 3, seed=1) - 2.0])
    g = torch.cat([torch.eye(2)[[0]].repeat(20, 1), torch.eye(2)[[1]].repeat(20, 1)])
    swapped = torch.cat([g[20:], g[:20]])
    assert mk_mmd(g, swapped).item() < 1e-6
    assert joint_mmd([f, g], [f, g]).item() < 1e-6
    assert joint_mmd([f, g], [f, swapped]).item() > 0.2


# --- CORAL -------------------------------------------------------------------------------------------------------
def test_coral_matches_the_formula_and_is_zero_for_equal_covariances() -> None:
    s, t = _randn(50, 4), 2.0 * _randn(40, 4, seed=1)
    assert torch.allclose(covariance(s), torch.from_numpy(np.cov(s.numpy(), rowvar=False)).float(), atol=1e-5)
    expected = ((np.cov(s.numpy(), rowvar=False) - np.cov(t.numpy(), rowvar=False)) ** 2).sum() / (4 * 16)
    assert coral_loss(s, t).item() == pytest.approx(expected, rel=1e-4)
    shuffled_and_moved = s[torch.randperm(50, generator=torch.Generator().manual_seed(2))] + 5.0
    assert coral_loss(s, shuffled_and_moved).item() < 1e-9  # covariance ignores order and means
    assert coral_loss(s, t).item() > 0.1


def test_minimising_coral_over_a_linear_map_of_the_target_matches_the_covariances() -> None:
    s = _randn(256, 4) @ torch.tensor([[1.0, 0.5, 0, 0], [0, 1.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 0.5]])
    t = _randn(256, 4, seed=1) * torch.tensor([3.0, 0.2, 1.0, 1.0])
    a = torch.eye(4).requires_grad_(True)
    opt = torch.optim.Adam([a], lr=0.1)
    first = coral_loss(s, t @ a).item()
    for _ in range(150):
        loss = coral_loss(s, t @ a)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert coral_loss(s, t @ a).item() < 1e-3 * first
    cs, ct = covariance(s), covariance(t @ a.detach())
    assert (cs - ct).norm().item() < 0.05 * cs.norm().item()


# --- MCC and IM --------------------------------------------------------------------------------------------------
def test_mcc_is_low_for_confident_diverse_predictions_and_high_for_confused_ones() -> None:
    c = 5
    diverse = 10.0 * torch.eye(c)[torch.arange(20) % c]  # confident, every class used
    collapsed = 10.0 * torch.eye(c)[torch.zeros(20, dtype=torch.long)]  # confident, one class for all
    noisy = _randn(20, c)  # unsure
    uniform = torch.zeros(20, c)
    values = {k: mcc_loss(v, temperature=1.0).item() for k, v in
              {"diverse": diverse, "collapsed": collapsed, "noisy": noisy, "uniform": uniform}.items()}
    assert values["diverse"] < 1e-3
    assert values["uniform"] == pytest.approx((c - 1) / c, rel=1e-4)  # every row of M~ is uniform
    assert values["diverse"] < values["noisy"] < values["uniform"]
    assert values["collapsed"] > 0.5  # rows of the unused classes sit on the one used class
    # a higher temperature softens the predictions: more confusion for the same logits
    assert mcc_loss(diverse, temperature=10.0).item() > mcc_loss(diverse, temperature=1.0).item()


def test_mcc_matches_the_formula() -> None:
    z, t = _randn(12, 4), 2.5
    p = torch.softmax(z / t, 1).double()
    h = -(p * torch.log(p + 1e-8)).sum(1)
    w = 1 + torch.exp(-h)
    w = 12 * w / w.sum()
    m = (p * w[:, None]).T @ p
    m = m / m.sum(1, keepdim=True)
    expected = (m.sum() - m.trace()) / 4
    assert mcc_loss(z, t).item() == pytest.approx(expected.item(), rel=1e-5)


def test_information_maximization() -> None:
    c = 4
    diverse = 20.0 * torch.eye(c)[torch.arange(8) % c]
    assert information_maximization(diverse).item() == pytest.approx(-math.log(c), abs=1e-4)
    assert information_maximization(torch.zeros(8, c)).item() == pytest.approx(0.0, abs=1e-6)
    collapsed = 20.0 * torch.eye(c)[torch.zeros(8, dtype=torch.long)]
    assert information_maximization(collapsed).item() == pytest.approx(0.0, abs=1e-4)
