"""Exact least squares: the optimum of the training objective, as a reference for gradient descent.

One streaming pass in float64 accumulates the count, the column means and the *centred*
cross-product matrix of [x, y] (batches merged with Chan, Golub and LeVeque's pairwise update, so
no cancellation from subtracting n * mean² at the end); under DDP each process accumulates its
share and the pieces are merged across processes. The centred normal equations, in the same
standardized space and with the same L2 penalty as the model, are then equilibrated and solved by
Cholesky (by SVD when singular).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from linreg_pl.scaling import Scaling


@dataclass
class Moments:
    """Count, means and centred cross-products of the columns of [x, y], in float64."""

    n_features: int
    count: int
    mean: np.ndarray  # (d + t,)
    comoment: np.ndarray  # (d + t, d + t): sum over rows of (row - mean) outer (row - mean)

    @classmethod
    def empty(cls, n_features: int, n_targets: int) -> Moments:
        width = n_features + n_targets
        return cls(n_features, 0, np.zeros(width), np.zeros((width, width)))

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, batch_rows: int = 65536) -> Moments:
        """Stream over the rows of x (n, d) and y (n, t) in batches of ``batch_rows``."""
        moments = cls.empty(x.shape[1], y.shape[1])
        for start in range(0, len(x), batch_rows):
            moments = moments.merge(cls._of_batch(x[start : start + batch_rows], y[start : start + batch_rows]))
        return moments

    @classmethod
    def _of_batch(cls, x: np.ndarray, y: np.ndarray) -> Moments:
        rows = np.hstack([np.asarray(x, np.float64), np.asarray(y, np.float64)])
        mean = rows.mean(axis=0)
        centred = rows - mean
        return cls(x.shape[1], len(rows), mean, centred.T @ centred)

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        comoment = self.comoment + other.comoment + np.outer(delta, delta) * (self.count * other.count / count)
        return Moments(self.n_features, count, mean, comoment)

    def all_gather(self) -> Moments:
        """Merge the moments of every process (in rank order, so every rank gets the same answer)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        packed = torch.from_numpy(np.concatenate([[self.count], self.mean, self.comoment.ravel()]))
        gathered = [torch.empty_like(packed) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, packed)
        width = len(self.mean)
        merged = Moments.empty(self.n_features, width - self.n_features)
        for piece in gathered:
            piece = piece.numpy()
            merged = merged.merge(
                Moments(self.n_features, int(piece[0]), piece[1 : 1 + width], piece[1 + width :].reshape(width, width))
            )
        return merged

    def solve(
        self, scaling: Scaling | None = None, l2: float = 0.0, fit_intercept: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """argmin mean((x_s W_s.T + b_s - y_s)²) + l2 ||W_s||², mapped back to original units.

        Returns the weights (t, d) and bias (t,). ``scaling`` gives the standardized space (the
        model's); without ``l2`` the answer does not depend on it. ``fit_intercept=False`` fixes
        the bias at 0 (in original units; then no scaling may be given).
        """
        scaling = scaling or Scaling.identity(self.n_features, len(self.mean) - self.n_features)
        cxx, cxy = self._standardized_covariances(scaling)
        mean_x, mean_y = self._standardized_means(scaling)
        if not fit_intercept:  # uncentred second moments
            cxx, cxy = cxx + np.outer(mean_x, mean_x), cxy + np.outer(mean_x, mean_y)
        # The loss averages the squared error over targets as well as rows, so per target the
        # penalty weighs n_targets times more: (cxx + t * l2 * I) w_t = cxy_t.
        system = cxx + l2 * cxy.shape[1] * np.eye(self.n_features)
        # Equilibrate (unit diagonal) so that columns of very different scale lose no digits.
        diagonal = np.sqrt(np.diag(system))
        diagonal[diagonal == 0] = 1.0
        equilibrated = system / np.outer(diagonal, diagonal)
        rhs = cxy / diagonal[:, None]
        try:
            factor = np.linalg.cholesky(equilibrated)
            solution = np.linalg.solve(factor.T, np.linalg.solve(factor, rhs))
        except np.linalg.LinAlgError:  # singular: collinear or constant columns; minimum-norm answer
            solution = np.linalg.lstsq(equilibrated, rhs, rcond=None)[0]
        weight_s = (solution / diagonal[:, None]).T
        bias_s = mean_y - weight_s @ mean_x if fit_intercept else np.zeros(len(mean_y))
        return scaling.to_original_units(weight_s, bias_s)

    def objective(
        self, weight: np.ndarray, bias: np.ndarray, scaling: Scaling | None = None, l2: float = 0.0, l1: float = 0.0
    ) -> float:
        """The training objective of parameters in original units, from the moments alone."""
        d = self.n_features
        scaling = scaling or Scaling.identity(d, len(self.mean) - d)
        weight, bias = np.asarray(weight, np.float64), np.asarray(bias, np.float64)
        cov = self.comoment / self.count
        residual_cov = cov[d:, d:] - weight @ cov[:d, d:] - cov[d:, :d] @ weight.T + weight @ cov[:d, :d] @ weight.T
        residual_mean = self.mean[d:] - weight @ self.mean[:d] - bias
        mse_per_target = (np.diag(residual_cov) + residual_mean**2) / scaling.target_scale**2
        weight_s = weight * scaling.feature_scale / scaling.target_scale[:, None]
        return float(mse_per_target.mean() + l2 * np.square(weight_s).sum() + l1 * np.abs(weight_s).sum())

    def _standardized_covariances(self, scaling: Scaling) -> tuple[np.ndarray, np.ndarray]:
        d = self.n_features
        cov = self.comoment / self.count
        cxx = cov[:d, :d] / np.outer(scaling.feature_scale, scaling.feature_scale)
        cxy = cov[:d, d:] / np.outer(scaling.feature_scale, scaling.target_scale)
        return cxx, cxy

    def _standardized_means(self, scaling: Scaling) -> tuple[np.ndarray, np.ndarray]:
        d = self.n_features
        return (self.mean[:d] - scaling.feature_mean) / scaling.feature_scale, (
            self.mean[d:] - scaling.target_mean
        ) / scaling.target_scale


def exact_least_squares(
    x: np.ndarray, y: np.ndarray, scaling: Scaling | None = None, l2: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The exact least-squares weights (t, d) and bias (t,) of y ≈ x @ W.T + b.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(100, 2))
    >>> weight, bias = exact_least_squares(x, x @ [[2.0], [-3.4]] + 4.2)
    >>> np.round(weight, 10).tolist(), np.round(bias, 10).tolist()
    ([[2.0, -3.4]], [4.2])
    """
    return Moments.of(x, y).solve(scaling, l2)
