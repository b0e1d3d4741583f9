"""Transferability scores: how well do frozen features (or a source classifier) fit a target labelling?

Each score reads features that were computed once (no training, no gradient) and returns one float, higher meaning
"this backbone should transfer better to these labels":

- :func:`logme` — the log marginal evidence of a Bayesian linear model on the features (You et al., 2021);
- :func:`leep` — the log expected empirical prediction of the source classifier re-mapped to the target labels
  (Nguyen et al., 2020); needs the source model's class probabilities, so only for backbones with a source head;
- :func:`hscore` — the H-score of Bao et al. (2019), by default with the Ledoit-Wolf shrinkage of Ibrahim et al.
  (2022), which makes it stable when the feature dimension is large against the number of samples;
- :func:`knn_accuracy` — k-nearest-neighbour accuracy on L2-normalised features (cosine neighbours), on a held-out
  set or leave-one-out.

Why hand-written: no maintained library on the package registry provides these (TLlib, which has reference code,
is not installable here and drags its own training framework along). The formulas are short; they are written
against numpy/scipy/scikit-learn (SVD, Ledoit-Wolf, nearest neighbours) and each function's docstring gives the
maths and the paper. Everything is computed in float64.

Inputs are checked at the boundary: a score of NaN features, of a single class, or of mismatched lengths raises a
:class:`~transferkit.errors.DataError` with one sentence saying what to fix.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

__all__ = ["hscore", "knn_accuracy", "leep", "logme"]

_EPS = 1e-5  # the additive epsilon of the reference LogME code: keeps alpha and beta finite on degenerate features


def _features(features: np.ndarray, what: str = "features") -> np.ndarray:
    f = np.asarray(features)
    if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] == 0:
        raise DataError(f"The {what} must be a non-empty 2-D array (samples x dimensions), not shape {f.shape}.")
    if not np.issubdtype(f.dtype, np.number) or np.issubdtype(f.dtype, np.complexfloating):
        raise DataError(f"The {what} must be real numbers, not {f.dtype}.")
    f = f.astype(np.float64, copy=False)
    if not np.all(np.isfinite(f)):
        bad = int((~np.isfinite(f)).any(axis=1).sum())
        raise DataError(
            f"The {what} contain NaN or infinite values in {bad} of {len(f)} rows; the backbone diverged or the "
            "inputs are broken, so check the data and the backbone's weights."
        )
    return f


def _labels(labels: np.ndarray, n: int, what: str = "labels") -> tuple[np.ndarray, int]:
    """Labels as contiguous indices ``0..K-1`` (missing classes dropped), and ``K``; at least two classes."""
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"Got {n} feature rows but {what} of shape {y.shape}; give one label per row.")
    _, idx = np.unique(y, return_inverse=True)
    k = int(idx.max()) + 1 if len(idx) else 0
    if k < 2:
        raise DataError(
            f"The {what} hold {k} class(es); a transferability score needs at least two classes to tell apart."
        )
    return idx.astype(np.int64), k


def logme(features: np.ndarray, labels: np.ndarray, *, max_iter: int = 100, tol: float = 1e-6) -> float:
    """LogME: the mean per-sample log evidence of a Bayesian linear model from ``features`` to each one-hot label.

    You, Liu, Wang, Long. *LogME: Practical Assessment of Pre-trained Models for Transfer Learning.* ICML 2021.

    For each class ``k`` the target is the indicator ``y = 1[labels == k]`` (N,), modelled as ``y = F w + e`` with
    prior ``w ~ N(0, I/alpha)`` and noise ``e ~ N(0, I/beta)``. With ``A = alpha I + beta F^T F`` and the posterior
    mean ``m = beta A^-1 F^T y``, the log evidence (marginal likelihood) is::

        L(alpha, beta) = D/2 log alpha + N/2 log beta - N/2 log 2 pi
                         - beta/2 ||F m - y||^2 - alpha/2 ||m||^2 - 1/2 log |A|

    and alpha, beta are set to their maximum by MacKay's fixed-point iteration::

        gamma = sum_i beta s_i / (alpha + beta s_i),  alpha = gamma / ||m||^2,  beta = (N - gamma) / ||F m - y||^2

    where ``s_i`` are the squared singular values of ``F`` (the eigenvalues of ``F^T F``). Everything is done in the
    eigenbasis of the smaller of the two Gram matrices, ``F F^T`` (N x N) when N <= D and ``F^T F`` (D x D) when
    N > D, so one eigendecomposition of size ``r = min(N, D)`` serves all classes and every iteration costs O(r),
    whichever side is larger (the reference code of the paper has the same two branches). With ``F F^T = U diag(s)
    U^T`` and ``z = U^T y``: ``||m||^2 = sum beta^2 s_i z_i^2 / (alpha + beta s_i)^2`` and ``||F m - y||^2 = sum
    (alpha z_i / (alpha + beta s_i))^2``; with ``F^T F = V diag(s) V^T`` and ``t = V^T F^T y``: ``||m||^2 = sum
    (beta t_i / (alpha + beta s_i))^2`` and ``||F m - y||^2 = ||y||^2 - sum t_i^2 beta (2 alpha + beta s_i) /
    (alpha + beta s_i)^2``; in both, ``log |A| = sum_i log(alpha + beta s_i) + (D - r) log alpha``.

    The score is ``L / N`` averaged over the classes, so it is comparable across sample sizes (not across data
    sets). Features are used as they are (no standardisation), as in the paper: alpha and beta adapt to their scale.

    Returns:
        The LogME value; higher means the features explain the labels better (values are typically in [-2, 2]).
    """
    f = _features(features)
    y, k = _labels(labels, len(f))
    n, d = f.shape
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    wide = n <= d
    sigma, vecs = np.linalg.eigh(f @ f.T if wide else f.T @ f)
    sigma = np.clip(sigma, 0.0, None)
    if sigma[-1] <= 0:
        raise DataError("The features are all zero, so LogME is undefined; check the backbone and its layer.")
    proj = vecs.T @ onehot if wide else vecs.T @ (f.T @ onehot)  # z (N <= D) or t (N > D), one column per class
    r = len(sigma)
    evidences = []
    for c in range(k):
        p2 = proj[:, c] ** 2
        y2 = float(onehot[:, c].sum())

        def fit(alpha: float, beta: float, p2: np.ndarray = p2, y2: float = y2) -> tuple[np.ndarray, float, float]:
            denom = alpha + beta * sigma
            if wide:  # p2 = z^2
                m2 = float(np.sum(beta**2 * sigma * p2 / denom**2))
                res = float(np.sum(alpha**2 * p2 / denom**2))
            else:  # p2 = t^2
                m2 = float(np.sum(beta**2 * p2 / denom**2))
                res = max(y2 - float(np.sum(p2 * beta * (2 * alpha + beta * sigma) / denom**2)), 0.0)
            return denom, m2, res

        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            denom, m2, res = fit(alpha, beta)
            gamma = float(np.sum(beta * sigma / denom))
            new_alpha = max(gamma / (m2 + _EPS), 1e-300)
            new_beta = (n - gamma) / (res + _EPS)
            converged = abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta)
            alpha, beta = new_alpha, new_beta
            if converged:
                break
        denom, m2, res = fit(alpha, beta)
        log_det_a = float(np.log(denom).sum()) + (d - r) * np.log(alpha)
        ev = (
            d / 2 * np.log(alpha)
            + n / 2 * np.log(beta)
            - n / 2 * np.log(2 * np.pi)
            - beta / 2 * res
            - alpha / 2 * m2
            - log_det_a / 2
        )
        evidences.append(ev / n)
    return float(np.mean(evidences))


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP: log expected empirical prediction of the source classifier on the target labels.

    Nguyen, Hassner, Seeger, Archambeau. *LEEP: A New Measure to Evaluate Transferability of Learned
    Representations.* ICML 2020.

    ``theta(x)`` (N, Z) are the source model's class probabilities (softmax of its own head) on the target inputs.
    The empirical joint of target label ``y`` and source label ``z`` is ``P(y, z) = 1/N sum_{i: y_i = y}
    theta(x_i)_z``, the conditional ``P(y | z) = P(y, z) / sum_y' P(y', z)``, and::

        LEEP = 1/N sum_i log( sum_z P(y_i | z) theta(x_i)_z )

    i.e. the mean log-likelihood of the "dummy" classifier that maps the source prediction to target labels through
    ``P(y | z)``. It is at most 0; higher is better.

    Args:
        source_probs: (N, Z) probabilities, each row non-negative and summing to 1 (apply a softmax to logits first).
        labels: (N,) target labels.
    """
    p = _features(source_probs, "source probabilities")
    y, k = _labels(labels, len(p))
    if p.min() < 0 or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise DataError(
            "The source probabilities must be non-negative rows summing to 1; apply a softmax to the logits first."
        )
    n = len(p)
    joint = np.zeros((k, p.shape[1]))
    np.add.at(joint, y, p)
    joint /= n
    marginal = joint.sum(axis=0, keepdims=True)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y | z), (K, Z)
    eep = (p * cond[y]).sum(axis=1)  # sum_z theta(x_i)_z P(y_i | z)
    return float(np.mean(np.log(np.maximum(eep, 1e-300))))


def _ledoit_wolf(x: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Ledoit-Wolf shrinkage ``a`` and target scale ``mu`` of centred ``x``, plus the smaller Gram matrix.

    The same estimate as :func:`sklearn.covariance.ledoit_wolf_shrinkage` (Ledoit & Wolf 2004; the tests check
    equality), computed from whichever of ``x^T x`` (D x D) and ``x x^T`` (N x N) is smaller, since both have the
    same Frobenius norm: scikit-learn always forms the D x D one, which for 4,096-d bag-of-words features on 1,000
    samples costs more than the forward pass being ranked. The Gram matrix is returned for reuse.
    """
    n, d = x.shape
    sq = np.einsum("ij,ij->i", x, x)  # squared row norms
    trace = float(sq.sum()) / n  # tr(S), S = x^T x / n
    mu = trace / d
    gram = x.T @ x if d <= n else x @ x.T
    delta_ = float(np.sum(gram**2)) / n**2  # ||S||_F^2
    beta = (float(np.sum(sq**2)) / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace + d * mu**2) / d  # ||S - mu I||_F^2 / d
    beta = min(beta, delta)
    return (0.0 if beta == 0 else beta / delta), mu, gram


def hscore(features: np.ndarray, labels: np.ndarray, shrinkage: bool = True) -> float:
    """H-score: how much of the feature covariance lies between the class means.

    Bao, Li, Huang, Zheng, Zhang. *An Information-Theoretic Approach to Transferability in Task Transfer Learning.*
    ICIP 2019. With ``f`` the features and ``g(y) = E[f | y]`` the class mean of each sample's class::

        H(f) = tr( cov(f)^-1 cov(g(Y)) )

    (a Fisher-criterion-like ratio: large when classes are far apart relative to the spread of the features). The
    raw covariance is singular or badly conditioned when D is near or above N, which makes the plain score erratic;
    ``shrinkage=True`` (the default) gives the regularised H-score of Ibrahim, Ponomareva, Mazumder, *Newer is not
    always better: Rethinking transferability metrics, their peculiarities, stability and performance*, ECML-PKDD
    2022: ``cov(f)`` is replaced by the Ledoit-Wolf estimate ``LW(f) = (1 - a) S + a mu I`` (``S`` the 1/N sample
    covariance, ``mu = tr(S) / D``, shrinkage ``a`` chosen from the data as scikit-learn's
    :class:`~sklearn.covariance.LedoitWolf` does) and the between-class covariance is scaled by ``(1 - a)``::

        H_reg(f) = tr( LW(f)^-1 (1 - a) cov(g(Y)) )

    ``shrinkage=False`` computes the original score with the Moore-Penrose pseudo-inverse of the sample covariance
    (both covariances with the 1/(N-1) normalisation, as in the authors' code; eigenvalues below 1e-10 of the largest
    are treated as zero).

    Only the K class means enter ``cov(g) = sum_k (n_k / (N-1)) m_k m_k^T``, so the trace is a sum of K quadratic
    forms. When D > N the inverse is applied through the Woodbury identity on the N x N Gram matrix (and the
    pseudo-inverse through the SVD of the features), so the cost is O(N^2 D), never O(D^3).
    """
    f = _features(features)
    y, k = _labels(labels, len(f))
    f = f - f.mean(axis=0, keepdims=True)
    n, d = f.shape
    counts = np.bincount(y, minlength=k).astype(np.float64)
    means = np.zeros((k, d))
    np.add.at(means, y, f)
    means /= counts[:, None]
    w = means * np.sqrt(counts / max(n - 1, 1))[:, None]  # (K, D): cov(g) = w^T w
    if not np.any(f):
        raise DataError("The features do not vary at all, so the H-score is undefined; check the backbone.")
    if not shrinkage:
        _, s, vt = np.linalg.svd(f, full_matrices=False)
        keep = s**2 > 1e-10 * s[0] ** 2
        proj = (vt[keep] @ w.T) / s[keep, None]  # diag(1/s) V^T w_k
        return float((n - 1) * np.sum(proj**2))
    import scipy.linalg

    a, mu, gram = _ledoit_wolf(f)
    if a >= 1.0:
        return 0.0  # the estimate is all shrinkage target: no between-class information is kept
    if d <= n:
        cov = (1 - a) / n * gram
        cov[np.diag_indices(d)] += a * mu
        sol = scipy.linalg.solve(cov, w.T, assume_a="pos")
        return float((1 - a) * np.sum(w.T * sol))
    # Woodbury: (a mu I + (1 - a)/n f^T f)^-1 = (I - f^T (c I + f f^T)^-1 f) / (a mu), c = a mu n / (1 - a)
    c = a * mu * n / (1 - a)
    fw = f @ w.T  # (N, K)
    inner = gram.copy()
    inner[np.diag_indices(n)] += c
    quad = float(np.sum(fw * scipy.linalg.solve(inner, fw, assume_a="pos")))
    return float((1 - a) * (np.sum(w**2) - quad) / (a * mu))


def knn_accuracy(
    train_f: np.ndarray,
    train_y: np.ndarray,
    test_f: np.ndarray | None = None,
    test_y: np.ndarray | None = None,
    k: int = 10,
) -> float:
    """Accuracy of a k-nearest-neighbour classifier (majority vote) on L2-normalised features.

    Features are scaled to unit length, so neighbours are by cosine similarity (the usual protocol for frozen
    features, e.g. Wu et al. 2018 and DINO, Caron et al. 2021), which removes a backbone's arbitrary feature scale.
    With ``test_f``/``test_y`` the classifier is scikit-learn's :class:`~sklearn.neighbors.KNeighborsClassifier`
    fitted on the training features and scored on the test ones. Without them it is leave-one-out on the training
    set: each sample is classified by its ``k`` nearest *other* samples, which uses every sample once as a test point
    and needs no second split (the default of :func:`~transferkit.ranking.rank_backbones`, where it saves extracting
    features for a validation set). Ties in the vote go to the smallest class index, as in scikit-learn. ``k`` is
    capped at the number of available neighbours.
    """
    from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
    from sklearn.preprocessing import normalize

    if k < 1:
        raise DataError(f"k must be at least 1 for k-NN accuracy, not {k}.")
    xtr = normalize(_features(train_f, "training features"))
    ytr, num = _labels(train_y, len(xtr), "training labels")
    if (test_f is None) != (test_y is None):
        raise DataError("Give both test features and test labels for k-NN accuracy, or neither (leave-one-out).")
    if test_f is not None:
        xte = normalize(_features(test_f, "test features"))
        if xte.shape[1] != xtr.shape[1]:
            raise DataError(f"Test features have {xte.shape[1]} dimensions but training features {xtr.shape[1]}.")
        yte = np.asarray(test_y)
        if yte.ndim != 1 or len(yte) != len(xte):
            raise DataError(f"Got {len(xte)} test feature rows but test labels of shape {yte.shape}.")
        clf = KNeighborsClassifier(n_neighbors=min(k, len(xtr))).fit(xtr, np.asarray(train_y))
        return float(np.mean(clf.predict(xte) == yte))
    n = len(xtr)
    kk = min(k, n - 1)
    nn = NearestNeighbors(n_neighbors=kk + 1).fit(xtr)
    idx = nn.kneighbors(xtr, return_distance=False)  # (n, kk + 1), usually the sample itself first
    # Drop the sample itself (it may not come first when there are exact duplicates), else the farthest neighbour.
    is_self = idx == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), kk)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    neigh = idx[keep].reshape(n, kk)
    votes = np.zeros((n, num))
    np.add.at(votes, (np.repeat(np.arange(n), kk), ytr[neigh].ravel()), 1.0)
    return float(np.mean(votes.argmax(axis=1) == ytr))
