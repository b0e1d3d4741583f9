"""The losses of domain adaptation, in plain torch: each term a method adds to the source cross-entropy.

Notation: a batch of ``n_s`` source and ``n_t`` target examples, features ``f`` (``d``-dimensional, the backbone's
output), logits ``z`` and class probabilities ``g = softmax(z)`` over ``C`` classes.

**Gradient reversal** (Ganin & Lempitsky 2015). ``R_lambda(x) = x`` in the forward pass and ``dR/dx = -lambda I`` in
the backward pass, so a domain discriminator ``D`` trained to *minimise* its loss on ``R(f)`` pushes the features
to *maximise* it: one backward pass plays the min-max game. DANN's schedule raises ``lambda`` from 0 to 1 over the
training progress ``p`` in [0, 1], so that the noisy early discriminator does not disturb the features::

    lambda(p) = 2 / (1 + exp(-gamma * p)) - 1,      gamma = 10

**Domain adversarial loss**: binary cross-entropy of the discriminator's logit ``D(.)``, source labelled 1 and
target 0, averaged per domain (optionally with per-example weights ``w``, normalised within each domain)::

    L_adv = 1/2 [ sum_i w_i BCE(D(f_i^s), 1) / sum_i w_i  +  sum_j w_j BCE(D(f_j^t), 0) / sum_j w_j ]

**CDAN** (Long et al. 2018) conditions the discriminator on the classifier's prediction through the multilinear map
``T(f, g) = g (x) f`` (outer product, flattened to ``C * d``), so it can align the class-conditional distributions
rather than the marginals. When ``C * d`` is large, the randomized multilinear map replaces it::

    T_R(f, g) = (R_f^T f) * (R_g^T g) / sqrt(k),     R_f (d x k), R_g (C x k) fixed with N(0, 1) entries

(``*`` elementwise); ``E[<T_R(f, g), T_R(f', g')>] = <f, f'> <g, g'> = <T(f, g), T(f', g')>``, so inner products
(what a first linear layer of the discriminator sees) are preserved in expectation. **CDAN+E** weights each example
by the certainty of its prediction, ``w = 1 + exp(-H(g))`` with ``H(g) = -sum_c g_c log g_c``, normalised to mean 1
within each domain (as in the authors' code), so confidently predicted examples count more.

**MK-MMD** (DAN, Long et al. 2015): the squared maximum mean discrepancy with a multi-kernel ``k = 1/m sum_u k_u``
of Gaussian kernels ``k_u(x, y) = exp(-||x - y||^2 / (s_u * b))``, ``s_u`` in ``{2^-2, 2^-1, 1, 2, 4}`` and ``b`` the
mean squared distance between distinct pairs of the pooled batch (detached: the bandwidth is a statistic of the
batch, not something to optimise). The biased quadratic estimate::

    MMD^2 = mean_{i,i'} k(s_i, s_i') + mean_{j,j'} k(t_j, t_j') - 2 mean_{i,j} k(s_i, t_j)

is exactly 0 for identical batches and never negative. DAN sums it over the adapted layers (features, and
optionally the logits); the *joint* variant (JAN, Long et al. 2017) multiplies the layers' kernels instead.

**Deep CORAL** (Sun & Saenko 2016): the distance between the feature covariances
``C = (F^T F - (1^T F)^T (1^T F) / n) / (n - 1)``::

    L_CORAL = || C_s - C_t ||_F^2 / (4 d^2)

**MCC** (Jin et al. 2020), on target logits only: probabilities at temperature ``T``, ``g = softmax(z / T)``;
example weights ``w_i = n (1 + exp(-H(g_i))) / sum_i' (1 + exp(-H(g_i')))``; the class correlation
``M = G^T diag(w) G`` (``C x C``), each row divided by its sum; the loss is the off-diagonal mass per class::

    L_MCC = (sum_{c,c'} M~_{cc'} - sum_c M~_cc) / C

It is small when every confident prediction picks one class and different examples pick different classes.

**Information maximisation** (IM, used as a label-free score and by SHOT-style training)::

    L_IM = mean_i H(g_i) - H(mean_i g_i)

(confident individual predictions, diverse on average); lower is better.

Why by hand: these are a few lines each on top of torch; the libraries that implement them (Transfer-Learning-Library,
``pytorch-adapt``) are unmaintained or bring a whole training framework, and skada's deep module wraps skorch, not
our loop. The formulas follow the papers and the authors' reference code, with the choices stated above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Multipliers of the base bandwidth of the multi-kernel MMD: 2^-2 .. 2^2.
KERNEL_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


# --- gradient reversal ---------------------------------------------------------------------------------------
class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.neg() * ctx.coeff, None


def reverse_gradient(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """``x`` unchanged in the forward pass; the gradient times ``-coeff`` in the backward pass."""
    return _ReverseGradient.apply(x, float(coeff))


class GradientReversal(nn.Module):
    """The gradient reversal layer ``R_lambda`` as a module; set ``coeff`` (``lambda``) before each forward."""

    def __init__(self, coeff: float = 1.0) -> None:
        super().__init__()
        self.coeff = float(coeff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.coeff)

    def extra_repr(self) -> str:
        return f"coeff={self.coeff:.4g}"


def dann_schedule(progress: float, gamma: float = 10.0) -> float:
    """``lambda(p) = 2 / (1 + exp(-gamma p)) - 1``: 0 at the start of training, about 1 at its end (``gamma = 10``)."""
    p = min(1.0, max(0.0, float(progress)))
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


# --- discriminator and adversarial loss ----------------------------------------------------------------------
class DomainDiscriminator(nn.Module):
    """An MLP from an input vector to one domain logit (source > 0, target < 0).

    ``layers`` hidden layers of width ``hidden``: ``Linear -> ReLU -> Dropout`` (the CDAN authors' adversarial
    network, 1024 wide with dropout 0.5), or ``Linear -> BatchNorm -> ReLU`` with ``batch_norm=True`` (the
    discriminator of Transfer-Learning-Library). It returns logits; the loss applies the sigmoid in a numerically
    stable way (and stays valid under bf16 autocast).
    """

    def __init__(self, in_dim: int, hidden: int = 1024, layers: int = 2, dropout: float = 0.5,
                 batch_norm: bool = False) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        width = in_dim
        for _ in range(layers):
            mods.append(nn.Linear(width, hidden))
            if batch_norm:
                mods += [nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            else:
                mods += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = hidden
        mods.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    w = weights.to(values.dtype)
    return (w * values).sum() / w.sum().clamp(min=1e-12)


def domain_adversarial_loss(d_source: torch.Tensor, d_target: torch.Tensor, w_source: torch.Tensor | None = None,
                            w_target: torch.Tensor | None = None) -> torch.Tensor:
    """``L_adv`` of the module docstring from discriminator logits (source labelled 1, target 0)."""
    ls = F.binary_cross_entropy_with_logits(d_source.float(), torch.ones_like(d_source, dtype=torch.float32),
                                            reduction="none")
    lt = F.binary_cross_entropy_with_logits(d_target.float(), torch.zeros_like(d_target, dtype=torch.float32),
                                            reduction="none")
    return 0.5 * (_weighted_mean(ls, w_source) + _weighted_mean(lt, w_target))


def domain_accuracy(d_source: torch.Tensor, d_target: torch.Tensor) -> torch.Tensor:
    """Share of examples the discriminator puts on the right side (0.5: it cannot tell the domains apart)."""
    right = (d_source.detach() > 0).sum() + (d_target.detach() <= 0).sum()
    return right.float() / (d_source.shape[0] + d_target.shape[0])


# --- CDAN ----------------------------------------------------------------------------------------------------
def multilinear_map(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``T(f, g) = g (x) f`` per example, flattened: ``(N, d), (N, C) -> (N, C * d)``."""
    return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


class RandomizedMultilinearMap(nn.Module):
    """``T_R(f, g) = (f R_f) * (g R_g) / sqrt(k)``: a ``k``-dimensional stand-in for ``g (x) f`` (module docstring).

    The random matrices are buffers drawn once from a seeded generator, so they are saved with the method and a
    resumed run uses the same ones.
    """

    def __init__(self, feature_dim: int, num_classes: int, output_dim: int = 1024, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("r_f", torch.randn(feature_dim, output_dim, generator=g))
        self.register_buffer("r_g", torch.randn(num_classes, output_dim, generator=g))
        self.output_dim = output_dim

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (f @ self.r_f.to(f.dtype)) * (g @ self.r_g.to(g.dtype)) / math.sqrt(self.output_dim)


def entropy(probs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-row entropy ``H(g) = -sum_c g_c log g_c`` (nats) of probabilities ``(N, C)``."""
    p = probs.float()
    return -(p * torch.log(p + eps)).sum(dim=1)


def certainty_weights(probs: torch.Tensor) -> torch.Tensor:
    """``1 + exp(-H(g))`` per row, normalised to mean 1 over the rows given (one domain's batch)."""
    w = 1.0 + torch.exp(-entropy(probs.detach()))
    return w * (w.shape[0] / w.sum())


# --- MMD -----------------------------------------------------------------------------------------------------
def _full_precision(x: torch.Tensor) -> Any:
    """A context without autocast: distances and covariances lose too much in bf16 (``|a|^2 + |b|^2 - 2ab``)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def multi_kernel(x: torch.Tensor, multipliers: Sequence[float] = KERNEL_MULTIPLIERS) -> torch.Tensor:
    """The multi-kernel matrix ``1/m sum_u exp(-||x_i - x_j||^2 / (s_u b))`` over the rows of ``x`` (docstring)."""
    with _full_precision(x):
        x = x.float().flatten(1)
        sq = x.pow(2).sum(1)
        dist = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp(min=0.0)
        n = x.shape[0]
        base = (dist.detach().sum() / max(1, n * (n - 1))).clamp(min=1e-12)
        return torch.stack([torch.exp(-dist / (s * base)) for s in multipliers]).mean(0)


def _mmd_from_kernel(k: torch.Tensor, n_s: int) -> torch.Tensor:
    kss, ktt, kst = k[:n_s, :n_s], k[n_s:, n_s:], k[:n_s, n_s:]
    return kss.mean() + ktt.mean() - 2.0 * kst.mean()


def mk_mmd(source: torch.Tensor, target: torch.Tensor,
           multipliers: Sequence[float] = KERNEL_MULTIPLIERS) -> torch.Tensor:
    """Biased squared MK-MMD between two batches ``(n_s, d)`` and ``(n_t, d)``; the bandwidth comes from both."""
    return _mmd_from_kernel(multi_kernel(torch.cat([source, target]), multipliers), source.shape[0])


def joint_mmd(sources: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
              multipliers: Sequence[float] = KERNEL_MULTIPLIERS) -> torch.Tensor:
    """JMMD (JAN): the MMD with the product over layers of each layer's multi-kernel (same examples per layer)."""
    k: torch.Tensor | None = None
    for s, t in zip(sources, targets, strict=True):
        kl = multi_kernel(torch.cat([s, t]), multipliers)
        k = kl if k is None else k * kl
    if k is None:
        raise ValueError("joint_mmd needs at least one layer")
    return _mmd_from_kernel(k, sources[0].shape[0])


# --- CORAL ---------------------------------------------------------------------------------------------------
def covariance(x: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance ``(F^T F - (1^T F)^T (1^T F) / n) / (n - 1)`` of the rows of ``x`` ``(n, d)``."""
    with _full_precision(x):
        x = x.float()
        xc = x - x.mean(0, keepdim=True)
        return xc.T @ xc / max(1, x.shape[0] - 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||C_s - C_t||_F^2 / (4 d^2)`` (Deep CORAL)."""
    d = source.shape[1]
    return (covariance(source) - covariance(target)).pow(2).sum() / (4.0 * d * d)


# --- MCC and IM ----------------------------------------------------------------------------------------------
def mcc_loss(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum class confusion of a (target) batch of logits ``(N, C)``; see the module docstring."""
    c = logits.shape[1]
    with _full_precision(logits):
        probs = torch.softmax(logits.float() / temperature, dim=1)
        w = certainty_weights(probs)[:, None]  # mean 1, detached
        m = (probs * w).T @ probs  # (C, C), symmetric
        m = m / m.sum(dim=1, keepdim=True).clamp(min=1e-12)
        return (m.sum() - m.trace()) / c


def information_maximization(logits: torch.Tensor) -> torch.Tensor:
    """``mean_i H(g_i) - H(mean_i g_i)``: low for confident, diverse predictions (IM; lower is better)."""
    probs = torch.softmax(logits.float(), dim=1)
    return entropy(probs).mean() - entropy(probs.mean(0, keepdim=True))[0]
