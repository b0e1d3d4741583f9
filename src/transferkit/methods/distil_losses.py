"""The losses of feature and relational distillation, as plain functions of tensors (no model, no teacher).

They are shared by the distillation methods (``fitnets``, ``attention``, ``rkd``, ``dist``) and tested on hand-made
tensors. What a layer's output looks like decides how it is compared:

* a **spatial map** ``(N, C, H, W)`` (a convolutional stage);
* a **token map** ``(N, L, D)`` (a transformer layer: channels last, ``L`` tokens);
* a **vector** ``(N, D)`` (a pooled embedding).

Student and teacher grids may differ (another architecture, another input size). :func:`resize_to` brings a
student map to the teacher's grid: **adaptive average pooling** when the student's grid is at least as large in every
direction (the usual case: a small student keeps a finer grid than a deep teacher; averaging keeps every student
position in the loss) and **bilinear interpolation** (linear for tokens) when it is smaller somewhere. Two outputs
of different kinds (a map and a vector) are both pooled to vectors (:func:`as_vector`: the mean over positions).

These are hand-written rather than taken from torchdistill (not a dependency, and its losses are bound to its own
config and hook system): each is a few lines of tensor algebra, written after the papers and checked by tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def as_vector(t: torch.Tensor) -> torch.Tensor:
    """``(N, D)``: a spatial map or token map averaged over its positions; a vector as it is."""
    if t.ndim == 4:
        return t.mean(dim=(2, 3))
    if t.ndim == 3:
        return t.mean(dim=1)
    if t.ndim == 2:
        return t
    return t.reshape(t.shape[0], -1)


def width_of(shape: torch.Size) -> int:
    """The width :func:`as_vector` leaves of an output of this shape: channels of a spatial map or vector (dim 1),
    features of a token map (the last dim)."""
    return int(shape[-1] if len(shape) == 3 else shape[1])


def same_kind(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tensors as the same kind of output: as they are when their ranks agree, else both pooled to vectors."""
    if s.ndim == t.ndim and s.ndim in (2, 3, 4):
        return s, t
    return as_vector(s), as_vector(t)


def resize_to(s: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """A spatial map ``(N, C, H, W)`` or token map ``(N, L, D)`` on another grid (``(H', W')`` or ``(L',)``).

    Adaptive average pooling when ``s``'s grid is at least ``grid`` in every direction, bilinear (tokens: linear)
    interpolation otherwise; unchanged when the grids agree. Vectors have no grid and are returned as they are.
    """
    if s.ndim == 4:
        if tuple(s.shape[2:]) == tuple(grid):
            return s
        if s.shape[2] >= grid[0] and s.shape[3] >= grid[1]:
            return F.adaptive_avg_pool2d(s, grid)
        return F.interpolate(s, size=tuple(grid), mode="bilinear", align_corners=False)
    if s.ndim == 3:
        if s.shape[1] == grid[0]:
            return s
        c = s.transpose(1, 2)  # (N, D, L)
        c = F.adaptive_avg_pool1d(c, grid[0]) if s.shape[1] >= grid[0] else \
            F.interpolate(c, size=grid[0], mode="linear", align_corners=False)
        return c.transpose(1, 2)
    return s


def grid_of(t: torch.Tensor) -> tuple[int, ...]:
    """The positions of an output: ``(H, W)`` of a spatial map, ``(L,)`` of a token map, ``()`` of a vector."""
    return tuple(t.shape[2:]) if t.ndim == 4 else (t.shape[1],) if t.ndim == 3 else ()


# --- FitNets ------------------------------------------------------------------------------------------------------
def hint_loss(projected: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """FitNets' hint loss: the mean squared difference per element between the projected student output (already on
    the teacher's grid and width) and the teacher's."""
    return F.mse_loss(projected.float(), teacher.detach().float())


# --- attention transfer -------------------------------------------------------------------------------------------
def attention_map(t: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko and Komodakis' spatial attention ``Q = sum_c |A_c|^p`` of a map, ``(N, H, W)`` (tokens: ``(N, L)``).

    Raises:
        ValueError: a vector has no positions to attend to.
    """
    if t.ndim == 4:
        return t.float().abs().pow(p).sum(dim=1)
    if t.ndim == 3:
        return t.float().abs().pow(p).sum(dim=2)
    raise ValueError(f"attention transfer needs a spatial or token map, not an output of shape {tuple(t.shape)}")


def attention_loss(s: torch.Tensor, t: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """The attention-transfer distance of one layer pair: ``mean_{i, k} (q_s - q_t)^2`` over examples ``i`` and
    positions ``k`` of the L2-normalised, flattened attention maps (the student's map resized to the teacher's grid).

    The paper writes ``|| q_s / ||q_s|| - q_t / ||q_t|| ||_2``; the authors' code (and this) uses its square averaged
    over positions, which is what their ``beta = 1000`` is scaled for.
    """
    qs, qt = attention_map(s, p), attention_map(t.detach(), p)
    if qs.shape[1:] != qt.shape[1:]:
        qs = resize_to(qs[:, None], tuple(qt.shape[1:]))[:, 0] if qs.ndim == 3 else \
            resize_to(qs[:, :, None], tuple(qt.shape[1:]))[:, :, 0]
    qs = F.normalize(qs.flatten(1), dim=1)
    qt = F.normalize(qt.flatten(1), dim=1)
    return (qs - qt).pow(2).mean()


# --- relational KD ------------------------------------------------------------------------------------------------
def _normalised_distances(e: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(e, e).clamp(min=0.0)
    off = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    mean = d[off].mean() if off.any() else d.new_ones(())
    return d / mean.clamp(min=1e-12)


def rkd_distance_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """RKD-D (Park et al. 2019): Huber loss between the pairwise distances of the student's and the teacher's
    embeddings in a batch, each divided by its mean non-zero distance (so widths and scales may differ)."""
    es, et = as_vector(s).float(), as_vector(t).detach().float()
    return F.smooth_l1_loss(_normalised_distances(es), _normalised_distances(et))


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # (N, N, D): unit vectors e_j - e_i
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()  # cos of the angle at i between j and k


def rkd_angle_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """RKD-A (Park et al. 2019): Huber loss between the cosines of the angles that every triplet of embeddings forms
    in the student's and in the teacher's space."""
    es, et = as_vector(s).float(), as_vector(t).detach().float()
    return F.smooth_l1_loss(_angles(es), _angles(et))


# --- DIST ---------------------------------------------------------------------------------------------------------
def _pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_losses(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """DIST (Huang et al. 2022): ``(inter, intra)`` with ``p = softmax(z / T)``:

    ``inter = T^2 * (1 - mean_i rho(p_s[i, :], p_t[i, :]))`` (each example's class ranking) and
    ``intra = T^2 * (1 - mean_c rho(p_s[:, c], p_t[:, c]))`` (each class's ranking of the batch), ``rho`` Pearson's
    correlation. Both are zero when the student's probabilities are a positive affine function of the teacher's.
    """
    tau = float(temperature)
    ps = F.softmax(student_logits.float() / tau, dim=1)
    pt = F.softmax(teacher_logits.detach().float() / tau, dim=1)
    inter = tau * tau * (1.0 - _pearson_rows(ps, pt).mean())
    intra = tau * tau * (1.0 - _pearson_rows(ps.t(), pt.t()).mean())
    return inter, intra
