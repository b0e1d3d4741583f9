"""How far apart two domains look in a model's feature space: the proxy A-distance and a 2-D embedding.

Proxy A-distance (Ben-David et al. 2007, 2010; used by Ganin et al. 2016 to show what DANN does). Train a linear
classifier to tell source features from target features and measure its error ``eps`` on held-out examples:

    d_A = 2 (1 - 2 eps)

``d_A = 0`` when the domains cannot be told apart (``eps = 0.5``, what adaptation aims at) and ``2`` when they are
perfectly separable. The classifier is scikit-learn's logistic regression on standardised features; both domains are
subsampled to the same size (so chance is 0.5) and the error is the mean over the two halves of a 2-fold split
(each half trains once and tests on the other). ``eps`` above 0.5 (worse than chance on held-out data) is read as
0.5: the distance is clipped to ``[0, 2]``.

The embedding is t-SNE (scikit-learn; perplexity 30, PCA initialisation) or PCA of the concatenated, centred
features of both domains, for the before/after plot of ``transferkit compare``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.base import Dataset
from ..data.sampling import subsample


def model_features(model: Any, ds: Dataset, *, max_samples: int | None = None, seed: int = 0,
                   batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """Backbone features ``(n, D)`` of ``model`` on (a seeded subsample of at most ``max_samples`` of) ``ds``.

    Returns the features and the labels of the kept examples (``None`` for unlabelled data). Runs in eval mode
    without gradients on the model's device and restores the training mode afterwards.
    """
    import torch

    from ..data.devices import to_device
    from ..data.loaders import make_loader

    ds = subsample(ds, max_samples, seed=seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        loader = make_loader(ds, model.preprocessing, image_size=model.image_size, train=False, batch_size=batch_size)
        for x, _ in loader:
            out.append(model.features(to_device(x, device)).float().cpu())
    model.train(was_training)
    feats = torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
    return feats, (None if ds.labels is None else np.asarray(ds.labels))


def a_distance(source: np.ndarray, target: np.ndarray, *, seed: int = 0, max_samples: int = 1000) -> float:
    """The proxy A-distance ``2 (1 - 2 eps)`` between two feature sets (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n = min(len(source), len(target), max_samples)
    if n < 4:
        raise ValueError(f"the A-distance needs at least 4 examples per domain, not {n}")
    xs = source[rng.choice(len(source), size=n, replace=False)]
    xt = target[rng.choice(len(target), size=n, replace=False)]
    x = np.concatenate([xs, xt]).astype(np.float64)
    y = np.r_[np.zeros(n), np.ones(n)]
    half = rng.permutation(len(x))
    folds = (half[: len(x) // 2], half[len(x) // 2 :])
    errors = []
    for train_idx, test_idx in (folds, folds[::-1]):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        clf.fit(x[train_idx], y[train_idx])
        errors.append(float((clf.predict(x[test_idx]) != y[test_idx]).mean()))
    eps = min(float(np.mean(errors)), 0.5)
    return float(np.clip(2.0 * (1.0 - 2.0 * eps), 0.0, 2.0))


def embed_2d(source: np.ndarray, target: np.ndarray, *, method: str = "tsne", seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
    """2-D coordinates of both feature sets in one shared embedding (``tsne`` or ``pca``)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    x = np.concatenate([source, target]).astype(np.float64)
    x -= x.mean(0)  # centred, not standardised: per-dimension scaling would give pure-noise dimensions equal weight
    if method == "pca":
        z = PCA(n_components=2, random_state=seed).fit_transform(x)
    elif method == "tsne":
        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        z = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    else:
        raise ValueError(f"unknown embedding {method!r}; use 'tsne' or 'pca'")
    return z[: len(source)], z[len(source) :]
