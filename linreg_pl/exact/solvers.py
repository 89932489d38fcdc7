"""Exact least squares: the optimum of the training objective, as a reference for gradient descent.

One streaming pass in float64 over chunks of rows keeps the count, the column means and a
*centred* square summary of [x, y], in one of two forms:

- ``Moments`` (method "normal", fast): the centred cross-product matrix C = Σ (row - mean)ᵀ(row - mean).
  Solving from C squares the condition number of the design: fine for most data, some digits lost
  on ill-conditioned polynomials (NIST Filip, Wampler).
- ``QRFactor`` (method "qr", accurate): an upper-triangular R with RᵀR = C, from a streaming
  tall-skinny QR (TSQR): each chunk is centred on its own mean and factored, and two factors
  merge by re-factoring [R_a; R_b; sqrt(n_a n_b / n) (mean_b - mean_a)], the QR analogue of Chan,
  Golub and LeVeque's pairwise update. The y columns ride along, so the residual sum of squares
  comes from R as well, never from a difference of large numbers. Where its error estimate says
  digits are at stake, a second pass over the rows refines the solution with residuals in
  extended precision (``QRFactor.refined``): NIST Wampler5 goes from 5.8 to 9.5 significant
  digits, and every NIST StRD linear set gets at least 8.

Rows may carry weights (weighted least squares, as statsmodels' WLS): the means are weighted,
each centred row is scaled by the square root of its weight, and the pairwise update weighs by
the weight sums; the count stays the number of rows (the degrees of freedom).

Chunks and processes merge with the same pairwise update (no cancellation from subtracting
n * mean² at the end). ``ExactLeastSquares`` is the torchmetrics ``Metric`` around them: each
process ``update``s with its share of the rows and ``compute`` merges the shares of every process.

Both accumulators reduce to one ``Factor`` (a triangular factor of the design's Gram matrix, the
projections of the targets and their residual sums of squares), from which come the solve (same
standardized space and L2 penalty as the model), the objective, the inference in
``linreg_pl.exact.statistics`` and the closed-form ridge selection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import ClassVar, Literal, NamedTuple

import numpy as np
import scipy.linalg
import torch
from torchmetrics import Metric

from linreg_pl.errors import InputError
from linreg_pl.scaling import Scaling

METHODS = ("normal", "qr")
BATCH_ROWS = 65536  # rows factored at once: bounds the memory of the centred copy of a chunk
QR_BLOCK_ROWS = 4096  # leaves of the TSQR tree within a batch (measured fastest on 1e5 x 100)
# The QR path makes its refinement pass only when the first solve's error estimate is above this:
# single coefficients measured up to 3 digits worse than the estimate, so 1e-13 keeps >= 10 digits.
REFINE_ABOVE = 1e-13


class Factor(NamedTuple):
    """The least-squares problem of every target reduced to d x d: r_xx is a square root of the
    design's Gram matrix (r_xxᵀ r_xx = Xᵀ X, centred when there is an intercept), r_xy = r_xx⁻ᵀ Xᵀ y,
    rss the residual and tss the total sum of squares of each target (centred with an intercept)."""

    r_xx: np.ndarray  # (d, d), upper triangular unless the Gram matrix was singular
    r_xy: np.ndarray  # (d, t)
    rss: np.ndarray  # (t,)
    tss: np.ndarray  # (t,)
    rank: int


@dataclass
class Accumulator(ABC):
    """What both accumulators share: the count and column means of [x, y], the solve and the
    objective. Subclasses hold the centred square summary and say how to merge and factor it.

    ``weight_sum`` and ``log_weight_sum`` are Σ w and Σ log w over the rows (equal weights: the
    count and 0); the mean and the square summary are weighted by w.
    """

    n_features: int
    count: int
    mean: np.ndarray  # (d + t,)
    weight_sum: float | None = field(default=None, kw_only=True)
    log_weight_sum: float = field(default=0.0, kw_only=True)

    method: ClassVar[str]

    def __post_init__(self) -> None:
        if self.weight_sum is None:
            self.weight_sum = float(self.count)

    @property
    def n_targets(self) -> int:
        return len(self.mean) - self.n_features

    @classmethod
    def empty(cls, n_features: int, n_targets: int) -> Accumulator:
        width = n_features + n_targets
        return cls(n_features, 0, np.zeros(width), np.zeros((width, width)))

    @classmethod
    def of(
        cls, x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None, batch_rows: int = BATCH_ROWS
    ) -> Accumulator:
        """Stream over the rows of x (n, d) and y (n, t), weighted by ``weight`` (n,) if given, in
        batches of ``batch_rows``."""
        accumulator = cls.empty(x.shape[1], y.shape[1])
        for start in range(0, len(x), batch_rows):
            rows = np.hstack(
                [
                    np.asarray(x[start : start + batch_rows], np.float64),
                    np.asarray(y[start : start + batch_rows], np.float64),
                ]
            )
            batch_weight = None if weight is None else np.asarray(weight[start : start + batch_rows], np.float64)
            accumulator = accumulator.merge(cls.of_rows(x.shape[1], rows, batch_weight))
        return accumulator

    @classmethod
    def of_rows(cls, n_features: int, rows: np.ndarray, weight: np.ndarray | None = None) -> Accumulator:
        """One batch of rows [x, y] (m, d + t), float64, with their weights (m,) or None."""
        if weight is None:
            mean = rows.mean(axis=0)
            return cls.of_centred(n_features, len(rows), mean, rows - mean)
        weight_sum = float(weight.sum())
        # All-zero weights: any centre will do, the rows add nothing but their count.
        mean = weight @ rows / weight_sum if weight_sum > 0 else rows.mean(axis=0)
        with np.errstate(divide="ignore"):
            log_weight_sum = float(np.log(weight).sum())
        centred = (rows - mean) * np.sqrt(weight)[:, None]
        return cls.of_centred(
            n_features, len(rows), mean, centred, weight_sum=weight_sum, log_weight_sum=log_weight_sum
        )

    @classmethod
    @abstractmethod
    def of_centred(cls, n_features: int, count: int, mean: np.ndarray, centred: np.ndarray, **weights) -> Accumulator:
        """The accumulator of rows whose centred (and weight-scaled) copy is ``centred``."""

    def merge(self, other: Accumulator) -> Accumulator:
        """The accumulator of both row sets (pairwise update, exact up to rounding)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        log_weight_sum = self.log_weight_sum + other.log_weight_sum
        if other.weight_sum == 0 or self.weight_sum == 0:  # rows of weight 0 add nothing but their count
            kept = self if other.weight_sum == 0 else other
            return replace(kept, count=count, log_weight_sum=log_weight_sum)
        weight_sum = self.weight_sum + other.weight_sum
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.weight_sum / weight_sum)
        square = self.merged_square(other, delta * np.sqrt(self.weight_sum * other.weight_sum / weight_sum))
        return type(self)(self.n_features, count, mean, square, weight_sum=weight_sum, log_weight_sum=log_weight_sum)

    @abstractmethod
    def merged_square(self, other: Accumulator, shift: np.ndarray) -> np.ndarray:
        """The square summary of both row sets, whose means differ by ``shift`` (scaled)."""

    @abstractmethod
    def square(self) -> np.ndarray:
        """The (d + t, d + t) centred summary (C or R): with count and mean, the whole state."""

    @abstractmethod
    def factor(self, scaling: Scaling | None = None, fit_intercept: bool = True) -> Factor:
        """The problem in the standardized space of ``scaling`` (identity: original units)."""

    def to_vector(self) -> np.ndarray:
        """[count, weight sum, log-weight sum, mean, square] flattened: the one tensor a Metric
        synchronizes across processes."""
        return np.concatenate([[self.count, self.weight_sum, self.log_weight_sum], self.mean, self.square().ravel()])

    @classmethod
    def from_vector(cls, n_features: int, vector: np.ndarray) -> Accumulator:
        width = int(np.sqrt(len(vector) - 3))  # len = 3 + w + w², so floor(sqrt) = w
        return cls(
            n_features,
            int(vector[0]),
            vector[3 : 3 + width].copy(),
            vector[3 + width :].reshape(width, width).copy(),
            weight_sum=float(vector[1]),
            log_weight_sum=float(vector[2]),
        )

    def solve(
        self, scaling: Scaling | None = None, l2: float = 0.0, fit_intercept: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """argmin mean((x_s W_s.T + b_s - y_s)²) + l2 ||W_s||², mapped back to original units.

        Returns the weights (t, d) and bias (t,). ``scaling`` gives the standardized space (the
        model's); without ``l2`` the answer does not depend on it. ``fit_intercept=False`` fixes
        the bias at 0 (in original units; then no scaling may be given).
        """
        scaling = scaling or Scaling.identity(self.n_features, self.n_targets)
        factor = self.factor(scaling, fit_intercept)
        # The loss averages the squared error over targets as well as (weighted) rows, so per
        # target the penalty on the weighted sums of squares weighs weight_sum * n_targets * l2.
        weight_s = ridge_solve(factor, self.weight_sum * self.n_targets * l2).T
        mean_x, mean_y = self.standardized_means(scaling)
        bias_s = mean_y - weight_s @ mean_x if fit_intercept else np.zeros(self.n_targets)
        return scaling.to_original_units(weight_s, bias_s)

    def objective(
        self, weight: np.ndarray, bias: np.ndarray, scaling: Scaling | None = None, l2: float = 0.0, l1: float = 0.0
    ) -> float:
        """The training objective of parameters in original units, from the accumulator alone."""
        d = self.n_features
        scaling = scaling or Scaling.identity(d, self.n_targets)
        weight, bias = np.asarray(weight, np.float64), np.asarray(bias, np.float64)
        # Centred residual of target j is [x_c, y_c] @ [-w_j; e_j]: its sum of squares is vᵀ C v.
        directions = np.vstack([-weight.T, np.eye(self.n_targets)])
        centred_sse = self.quadratic_form(directions)
        residual_mean = self.mean[d:] - weight @ self.mean[:d] - bias
        mse_per_target = (centred_sse / self.weight_sum + residual_mean**2) / scaling.target_scale**2
        weight_s = weight * scaling.feature_scale / scaling.target_scale[:, None]
        return float(mse_per_target.mean() + l2 * np.square(weight_s).sum() + l1 * np.abs(weight_s).sum())

    @abstractmethod
    def quadratic_form(self, directions: np.ndarray) -> np.ndarray:
        """diag(Vᵀ C V) for the columns of V: centred sums of squares of [x, y] @ V."""

    def standardized_means(self, scaling: Scaling) -> tuple[np.ndarray, np.ndarray]:
        d = self.n_features
        return (
            (self.mean[:d] - scaling.feature_mean) / scaling.feature_scale,
            (self.mean[d:] - scaling.target_mean) / scaling.target_scale,
        )

    def column_scale(self, scaling: Scaling) -> np.ndarray:
        return np.concatenate([scaling.feature_scale, scaling.target_scale])


@dataclass
class Moments(Accumulator):
    """Count, means and centred cross-products of the columns of [x, y], in float64 (method "normal").

    Examples
    --------
    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> moments = Moments.of(x, 2 * x + 1)
    >>> moments.count, moments.mean.tolist(), moments.comoment.tolist()
    (4, [1.5, 4.0], [[5.0, 10.0], [10.0, 20.0]])
    """

    comoment: np.ndarray  # (d + t, d + t): sum over rows of (row - mean) outer (row - mean)

    method: ClassVar[str] = "normal"

    @classmethod
    def of_centred(cls, n_features: int, count: int, mean: np.ndarray, centred: np.ndarray, **weights) -> Moments:
        return cls(n_features, count, mean, centred.T @ centred, **weights)

    def merged_square(self, other: Moments, shift: np.ndarray) -> np.ndarray:
        return self.comoment + other.comoment + np.outer(shift, shift)

    def square(self) -> np.ndarray:
        return self.comoment

    def quadratic_form(self, directions: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ik,kj->j", directions, self.comoment, directions)

    def factor(self, scaling: Scaling | None = None, fit_intercept: bool = True) -> Factor:
        d = self.n_features
        scaling = scaling or Scaling.identity(d, self.n_targets)
        scale = self.column_scale(scaling)
        gram = self.comoment / np.outer(scale, scale)
        if not fit_intercept:  # uncentred second moments of the standardized columns
            mean = np.concatenate(self.standardized_means(scaling))
            gram = gram + self.weight_sum * np.outer(mean, mean)
        gxx, gxy, tss = gram[:d, :d], gram[:d, d:], np.diag(gram)[d:]
        # Equilibrate (unit diagonal) so that columns of very different scale lose no digits.
        diagonal = np.sqrt(np.diag(gxx))
        diagonal[diagonal == 0] = 1.0
        equilibrated = gxx / np.outer(diagonal, diagonal)
        try:
            r_eq = np.linalg.cholesky(equilibrated).T
            rank = d
        except np.linalg.LinAlgError:  # singular: collinear or constant columns
            # A symmetric square root (not triangular); solves then go through least squares.
            values, vectors = np.linalg.eigh(equilibrated)
            keep = values > values.max() * d * np.finfo(float).eps
            r_eq = (vectors[:, keep] * np.sqrt(values[keep])).T
            r_eq = np.vstack([r_eq, np.zeros((d - len(r_eq), d))])
            rank = int(keep.sum())
        r_xx = r_eq * diagonal
        rhs = gxy / diagonal[:, None]
        r_xy = (
            np.linalg.lstsq(r_eq.T, rhs, rcond=None)[0]
            if rank < d
            else scipy.linalg.solve_triangular(r_eq, rhs, trans="T")
        )
        rss = np.maximum(tss - np.square(r_xy).sum(axis=0), 0.0)  # can round below 0 on an exact fit
        return Factor(r_xx, r_xy, rss, tss, rank)


@dataclass
class QRFactor(Accumulator):
    """Count, means and the triangular factor R (RᵀR = centred cross-products) of [x, y] (method "qr").

    Examples
    --------
    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> qr = QRFactor.of(x, 2 * x + 1)
    >>> np.allclose(qr.r.T @ qr.r, Moments.of(x, 2 * x + 1).comoment)
    True
    """

    r: np.ndarray  # (d + t, d + t) upper triangular

    method: ClassVar[str] = "qr"

    @classmethod
    def of_centred(cls, n_features: int, count: int, mean: np.ndarray, centred: np.ndarray, **weights) -> QRFactor:
        return cls(n_features, count, mean, _triangular_factor(centred), **weights)

    def merged_square(self, other: QRFactor, shift: np.ndarray) -> np.ndarray:
        return _triangular_factor(np.vstack([self.r, other.r, shift]))

    def square(self) -> np.ndarray:
        return self.r

    def refined(self, chunks: Iterable[tuple[np.ndarray, ...]]) -> QRFactor:
        """The same factor with its solution improved by one step of iterative refinement, from a
        second pass over the same rows (chunks x (m, d), y (m, t) in original units, or (x, y,
        weight) with the rows' weights (m,) or None), when the first pass's solution may have
        lost digits.

        A backward-stable float64 solve still loses about κ²·ε·‖r‖/(‖X‖·‖w‖) when the residuals
        dwarf the fit (NIST Wampler5: 5.8 significant digits, as LAPACK on the whole matrix). The
        refinement computes the residuals of the first solve and Xᵀr in extended precision
        (``np.longdouble``) and solves RᵀR δ = Xᵀr from R (corrected semi-normal equations,
        Björck 1987): Wampler5 then gets 9.5 digits. The projections r_xy are replaced by
        r_xx (w + δ), so every later solve, statistic and penalty sees the refined answer.

        The factor is returned as is, and ``chunks`` left unread, when the first solve's error
        estimate (``error_estimate``) is below ``REFINE_ABOVE`` (nothing to gain: most data), or
        when κ²·ε >= 1 (NIST Filip, κ ≈ 4e9: the step shrinks the error by about κ²·ε, so it
        cannot converge), or when the columns are not independent.

        Examples
        --------
        >>> x = np.arange(21.0)[:, None] ** [1, 2, 3, 4, 5]
        >>> y = x.sum(axis=1, keepdims=True) + 1 + 1e7 * (-1.0) ** np.arange(21)[:, None]
        >>> qr = QRFactor.of(x, y)
        >>> weight = qr.refined([(x, y)]).solve()[0]
        >>> bool(np.abs(weight - np.linalg.lstsq(np.c_[np.ones(21), x], y, rcond=None)[0][1:].T).max() < 1e-3)
        True
        """
        condition, estimate = self._sensitivity()
        if condition**2 * np.finfo(float).eps >= 1 or estimate <= REFINE_ABOVE:
            return self
        d = self.n_features
        r_xx = self.r[:d, :d]
        weight = scipy.linalg.solve_triangular(r_xx, self.r[:d, d:])  # (d, t), centred problem
        mean = self.mean.astype(np.longdouble)
        gradient = np.zeros((d, self.n_targets), np.longdouble)
        for x, y, *row_weight in chunks:
            centred_x = np.asarray(x, np.longdouble) - mean[:d]
            residual = (np.asarray(y, np.longdouble) - mean[d:]) - centred_x @ weight
            if row_weight and row_weight[0] is not None:
                residual = residual * np.asarray(row_weight[0], np.longdouble)[:, None]
            gradient += centred_x.T @ residual
        step = scipy.linalg.solve_triangular(r_xx, gradient.astype(np.float64), trans="T")
        r = self.r.copy()
        r[:d, d:] = r_xx @ (weight + scipy.linalg.solve_triangular(r_xx, step))
        return replace(self, r=r)

    def error_estimate(self) -> float:
        """First-order estimate of the one-pass solution's relative error (normwise, columns
        equilibrated, worst target): ε·κ·(1 + κ·‖r‖/(‖A‖·‖w‖)) (Golub and Van Loan, Theorem
        5.3.1); inf when the columns are not independent. Single coefficients can be worse: on
        the NIST sets, up to 3 digits below it."""
        return self._sensitivity()[1]

    def _sensitivity(self) -> tuple[float, float]:
        """κ of the centred, equilibrated design and ``error_estimate``."""
        d = self.n_features
        r_xx = self.r[:d, :d]
        column_norms = np.linalg.norm(r_xx, axis=0)
        if np.any(column_norms == 0):
            return np.inf, np.inf
        singular_values = np.linalg.svd(r_xx / column_norms, compute_uv=False)
        if singular_values[-1] == 0:
            return np.inf, np.inf
        condition = singular_values[0] / singular_values[-1]
        solution = scipy.linalg.solve_triangular(r_xx, self.r[:d, d:]) * column_norms[:, None]
        residual = np.linalg.norm(self.r[d:, d:], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.nan_to_num(residual / (singular_values[0] * np.linalg.norm(solution, axis=0)), nan=0.0)
        return condition, float(np.finfo(float).eps * condition * (1 + condition * ratio).max())

    def quadratic_form(self, directions: np.ndarray) -> np.ndarray:
        return np.square(self.r @ directions).sum(axis=0)

    def factor(self, scaling: Scaling | None = None, fit_intercept: bool = True) -> Factor:
        d = self.n_features
        scaling = scaling or Scaling.identity(d, self.n_targets)
        r = self.r / self.column_scale(scaling)  # column scaling: RᵀR becomes the standardized C
        if not fit_intercept:  # uncentred: [x_s, y_s]ᵀ[x_s, y_s] = C_s + n m mᵀ
            mean = np.concatenate(self.standardized_means(scaling))
            r = _triangular_factor(np.vstack([r, np.sqrt(self.weight_sum) * mean]))
        r_xx, r_xy, r_yy = r[:d, :d], r[:d, d:], r[d:, d:]
        # The residual of target j lies in the rows below d of its column of R.
        rss = np.square(r_yy).sum(axis=0)
        tss = rss + np.square(r_xy).sum(axis=0)
        # |R_jj| / ||R_:j|| is the sine of the angle between column j and the columns before it.
        rank = int((np.abs(np.diag(r_xx)) > np.linalg.norm(r_xx, axis=0) * d * np.finfo(float).eps).sum())
        return Factor(r_xx, r_xy, rss, tss, rank)


ACCUMULATORS: dict[str, type[Accumulator]] = {"normal": Moments, "qr": QRFactor}


def _triangular_factor(rows: np.ndarray) -> np.ndarray:
    """R of rows = QR, square (zero rows appended when there are fewer rows than columns).

    Tall inputs are factored in blocks of ``QR_BLOCK_ROWS`` whose R's are stacked and factored
    again (a TSQR tree): LAPACK's Householder QR of one very tall matrix streams every column
    through memory once per reflector and is ~3x slower than the blocked tree.
    """
    width = rows.shape[1]
    if len(rows) > 2 * QR_BLOCK_ROWS:
        rows = np.vstack([_triangular_factor(rows[i : i + QR_BLOCK_ROWS]) for i in range(0, len(rows), QR_BLOCK_ROWS)])
    r = np.linalg.qr(rows, mode="r")
    return np.vstack([r, np.zeros((width - len(r), width))]) if len(r) < width else r


def ridge_solve(factor: Factor, penalty: float = 0.0) -> np.ndarray:
    """argmin ||y - X w||² + penalty ||w||² for every target, from the factor: (d, t).

    Without a penalty and with full rank: a triangular solve of r_xx w = r_xy (backward stable,
    so the QR path keeps its digits). With a penalty: the augmented problem [r_xx; sqrt(p) I]
    is re-factored (never r_xxᵀ r_xx + p I, which would square the condition number again).
    Rank-deficient without penalty: the minimum-norm answer (SVD, columns equilibrated).
    """
    d = len(factor.r_xx)
    if penalty > 0:
        augmented = np.block([[factor.r_xx, factor.r_xy], [np.sqrt(penalty) * np.eye(d), np.zeros_like(factor.r_xy)]])
        r = _triangular_factor(augmented)
        return scipy.linalg.solve_triangular(r[:d, :d], r[:d, d:])
    norms = np.linalg.norm(factor.r_xx, axis=0)
    norms[norms == 0] = 1.0
    equilibrated = factor.r_xx / norms
    if factor.rank == d:
        return scipy.linalg.solve_triangular(equilibrated, factor.r_xy) / norms[:, None]
    return np.linalg.lstsq(equilibrated, factor.r_xy, rcond=None)[0] / norms[:, None]


def merge_vectors(accumulator_type: type[Accumulator], n_features: int, gathered: torch.Tensor) -> torch.Tensor:
    """The Metric's ``dist_reduce_fx``: merge the packed states of every process (one per row of
    ``gathered``, in rank order, so that every rank gets the same bits)."""
    pieces = gathered.detach().cpu().numpy()
    merged = accumulator_type.from_vector(n_features, pieces[0])
    for piece in pieces[1:]:
        merged = merged.merge(accumulator_type.from_vector(n_features, piece))
    return torch.from_numpy(merged.to_vector()).to(gathered.device)


class ExactLeastSquares(Metric):
    """The exact least-squares accumulator as a torchmetrics Metric: ``update`` with chunks of rows
    (original units, float64), ``compute`` gives the accumulator merged over every process.

    The whole state is one float64 vector [count, mean, C or R] whose ``dist_reduce_fx`` merges
    the gathered vectors pairwise; torchmetrics does the gathering, so no collective call lives
    here. Keep the Metric on the device of the process group's backend (CUDA for NCCL).

    Parameters
    ----------
    n_features, n_targets : int
        Columns of x and y.
    method : {"normal", "qr"}
        "normal" accumulates the centred cross-products (fast); "qr" a streaming QR factor
        (slower, keeps the digits that the normal equations lose on ill-conditioned data).

    Examples
    --------
    >>> metric = ExactLeastSquares(n_features=1, n_targets=1, method="qr")
    >>> x = np.arange(10.0)[:, None]
    >>> metric.update(x[:4], 3 * x[:4] - 1)
    >>> metric.update(x[4:], 3 * x[4:] - 1)
    >>> weight, bias = metric.compute().solve()
    >>> np.round(weight, 12).tolist(), np.round(bias, 12).tolist()
    ([[3.0]], [-1.0])
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, n_features: int, n_targets: int, method: Literal["normal", "qr"] = "normal", **kwargs) -> None:
        super().__init__(**kwargs)
        for name, value in (("n_features", n_features), ("n_targets", n_targets)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}.")
        if method not in METHODS:
            raise InputError(f"method must be one of {list(METHODS)}, got {method!r}.")
        self.n_features, self.n_targets, self.method = n_features, n_targets, method
        self.accumulator_type = ACCUMULATORS[method]
        empty = self.accumulator_type.empty(n_features, n_targets)
        self.add_state(
            "packed",
            default=torch.from_numpy(empty.to_vector()),
            dist_reduce_fx=partial(merge_vectors, self.accumulator_type, n_features),
        )

    def update(
        self,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        weight: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        """Add rows: x (m, n_features) and y (m, n_targets), float64 in original units, weighted
        by ``weight`` (m,) if given."""
        x, y = _as_float64(x), _as_float64(y)
        weight = None if weight is None else _as_float64(weight)
        if (
            x.ndim != 2
            or y.ndim != 2
            or len(x) != len(y)
            or x.shape[1] != self.n_features
            or y.shape[1] != self.n_targets
        ):
            raise InputError(
                f"x and y must have shapes (m, {self.n_features}) and (m, {self.n_targets}); "
                f"got {x.shape} and {y.shape}."
            )
        merged = self.accumulated().merge(self.accumulator_type.of(x, y, weight))
        self.packed = torch.from_numpy(merged.to_vector()).to(self.packed.device)

    def accumulated(self) -> Accumulator:
        """This process's rows so far (within ``compute``: every process's rows)."""
        return self.accumulator_type.from_vector(self.n_features, self.packed.detach().cpu().numpy())

    def compute(self) -> Accumulator:
        return self.accumulated()


def _as_float64(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array, np.float64)


def exact_least_squares(
    x: np.ndarray,
    y: np.ndarray,
    scaling: Scaling | None = None,
    l2: float = 0.0,
    method: str = "normal",
    weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact (weighted, with ``weight`` (n,)) least-squares weights (t, d) and bias (t,) of
    y ≈ x @ W.T + b.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(100, 2))
    >>> weight, bias = exact_least_squares(x, x @ [[2.0], [-3.4]] + 4.2, method="qr")
    >>> np.round(weight, 10).tolist(), np.round(bias, 10).tolist()
    ([[2.0, -3.4]], [4.2])
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {list(METHODS)}, got {method!r}.")
    accumulator = ACCUMULATORS[method].of(x, y, weight)
    if method == "qr":
        accumulator = accumulator.refined([(x, y, weight)])
    return accumulator.solve(scaling, l2)
