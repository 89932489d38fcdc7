"""Inference for the least-squares fit, and closed-form ridge selection, from the one-pass accumulators.

Everything here starts from ``Accumulator.factor`` (a square root of the design's Gram matrix,
the targets' projections and residual sums of squares), so it works the same from the normal
equations (``Moments``) and from the streaming QR (``QRFactor``). Results are plain JSON-ready
values, per target, in original units, with statsmodels' conventions (``OLS(y, add_constant(x)).fit()``;
with row weights ``WLS(y, add_constant(x), weights=w).fit()``: the accumulators then hold the
weighted summary).

Heteroskedasticity-robust (HC1, HC3) standard errors need each row's residual and leverage,
which the sufficient statistics do not hold: ``SandwichMeat`` is a second pass over the rows.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.special

from linreg_pl.errors import InputError
from linreg_pl.exact.solvers import Accumulator, Factor, ridge_solve
from linreg_pl.scaling import Scaling

INTERCEPT = "intercept"

# The t, F and normal tails below are scipy.special's functions, the ones scipy.stats' t.sf, t.ppf,
# f.sf and norm.sf call: importing scipy.stats took ~0.5 s of every command's start for these four.


def coefficient_inverse_gram(factor: Factor) -> np.ndarray:
    """(r_xxᵀ r_xx)⁻¹ (pseudo-inverse when rank-deficient), via the inverse of the equilibrated factor."""
    d = len(factor.r_xx)
    norms = np.linalg.norm(factor.r_xx, axis=0)
    norms[norms == 0] = 1.0
    equilibrated = factor.r_xx / norms
    if factor.rank == d:
        inverse = scipy.linalg.solve_triangular(equilibrated, np.eye(d))
    else:
        inverse = np.linalg.pinv(equilibrated)
    inverse = inverse / norms[:, None]
    return inverse @ inverse.T


def ols_inference(
    accumulator: Accumulator,
    feature_names: list[str],
    target_names: list[str],
    level: float = 0.95,
    fit_intercept: bool = True,
    meat: dict[str, np.ndarray] | None = None,
) -> dict:
    """Standard errors, t, p-values, confidence intervals and goodness of fit of the unpenalized fit.

    Parameters
    ----------
    accumulator : Moments or QRFactor
        The one-pass summary of the training rows (``ExactLeastSquares.compute()``).
    feature_names, target_names : list of str
        Names of the columns of x and y.
    level : float
        Confidence level of the intervals, in (0, 1).
    fit_intercept : bool
        With an intercept (R² and F centred) or through the origin (uncentred, as statsmodels).
    meat : dict, optional
        ``SandwichMeat.compute()`` from a second pass: adds HC1 and HC3 standard errors and their
        normal-approximation p-values (statsmodels' default for robust covariances).

    Returns
    -------
    dict
        ``{"level", "n_observations", "df_model", "df_resid", "rank", "targets": {name: {...}}}``;
        per target lists aligned with ``parameters`` (the intercept first) and the fit statistics.
        Values that do not exist (t of an exact fit, anything with no residual degrees of freedom)
        are None.

    Examples
    --------
    >>> from linreg_pl.exact.solvers import QRFactor
    >>> x = np.arange(6.0)[:, None]
    >>> y = 2 * x + 1 + np.array([[0.1], [-0.1], [0.0], [0.1], [-0.1], [0.0]])
    >>> result = ols_inference(QRFactor.of(x, y), ["x"], ["y"])
    >>> fit = result["targets"]["y"]
    >>> fit["parameters"], round(fit["estimate"][1], 6), result["df_resid"]
    (['intercept', 'x'], 1.988571, 4)
    """
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level!r}; for 95% intervals pass 0.95.")
    d, t = accumulator.n_features, accumulator.n_targets
    if len(feature_names) != d or len(target_names) != t:
        raise InputError(
            f"feature_names and target_names must name the {d} features and {t} targets, "
            f"got {len(feature_names)} and {len(target_names)} names."
        )
    n = accumulator.count
    factor = accumulator.factor(fit_intercept=fit_intercept)
    weight = ridge_solve(factor).T  # (t, d)
    mean_x, mean_y = accumulator.mean[:d], accumulator.mean[d:]
    k_constant = int(fit_intercept)
    df_model = factor.rank
    df_resid = n - df_model - k_constant
    inverse_gram = parameter_inverse_gram(factor, mean_x, accumulator.weight_sum, fit_intercept)
    sigma2 = factor.rss / df_resid if df_resid > 0 else np.full(t, np.nan)
    quantile = scipy.special.stdtrit(df_resid, (1 + level) / 2) if df_resid > 0 else np.nan
    parameters = ([INTERCEPT] if fit_intercept else []) + list(feature_names)
    targets = {}
    for j, name in enumerate(target_names):
        estimate = np.r_[mean_y[j] - weight[j] @ mean_x, weight[j]] if fit_intercept else weight[j]
        std_error = np.sqrt(sigma2[j] * np.diag(inverse_gram))
        with np.errstate(divide="ignore", invalid="ignore"):
            t_value = estimate / std_error
            explained = (factor.tss[j] - factor.rss[j]) / df_model
            f_statistic = explained / sigma2[j]
        p_value = 2 * scipy.special.stdtr(df_resid, -np.abs(t_value)) if df_resid > 0 else np.full_like(t_value, np.nan)
        # WLS (statsmodels): the likelihood of the rows scaled by sqrt(w), plus the Jacobian term.
        log_likelihood = -n / 2 * (math.log(2 * math.pi) + np.log(factor.rss[j] / n) + 1)
        log_likelihood += accumulator.log_weight_sum / 2
        n_parameters = df_model + k_constant
        fit = {
            "parameters": parameters,
            "estimate": estimate,
            "std_error": std_error,
            "t": t_value,
            "p_value": p_value,
            "ci_low": estimate - quantile * std_error,
            "ci_high": estimate + quantile * std_error,
            "residual_std_error": np.sqrt(sigma2[j]),
            "rss": factor.rss[j],
            "r_squared": 1 - factor.rss[j] / factor.tss[j],
            "adj_r_squared": 1 - (n - k_constant) / df_resid * factor.rss[j] / factor.tss[j] if df_resid > 0 else None,
            "f_statistic": f_statistic,
            "f_p_value": scipy.special.fdtrc(df_model, df_resid, f_statistic) if df_resid > 0 else None,
            "log_likelihood": log_likelihood,
            "aic": -2 * log_likelihood + 2 * n_parameters,
            "bic": -2 * log_likelihood + math.log(n) * n_parameters,
        }
        if meat is not None:
            for kind in ("hc1", "hc3"):
                covariance = meat_sandwich(meat, kind, inverse_gram, j, mean_x, accumulator, fit_intercept)
                robust_se = np.sqrt(np.diag(covariance))
                with np.errstate(divide="ignore", invalid="ignore"):
                    z = estimate / robust_se
                fit[kind] = {"std_error": robust_se, "p_value": 2 * scipy.special.ndtr(-np.abs(z))}
        targets[name] = _plain(fit)
    return {
        "level": level,
        "n_observations": n,
        "df_model": df_model,
        "df_resid": df_resid,
        "rank": factor.rank,
        "method": accumulator.method,
        "targets": targets,
    }


def parameter_inverse_gram(factor: Factor, mean_x: np.ndarray, weight_sum: float, fit_intercept: bool) -> np.ndarray:
    """(ZᵀWZ)⁻¹ for Z = [1, x] (or x) and row weights W (the identity when unweighted, where
    ``weight_sum`` is the count): the parameter covariance over sigma², intercept first.

    With an intercept the factor is of the (weighted-)centred x, and the block inverse is exact:
    var(b) = 1/Σw + mᵀ A m, cov(b, w) = -A m, cov(w) = A with A = (x_cᵀ W x_c)⁻¹.
    """
    inverse = coefficient_inverse_gram(factor)
    if not fit_intercept:
        return inverse
    am = inverse @ mean_x
    return np.block([[np.array([[1 / weight_sum + mean_x @ am]]), -am[None, :]], [-am[:, None], inverse]])


def least_squares_fit(accumulator: Accumulator) -> dict:
    """What prediction intervals need, as plain values a checkpoint holds: the (weighted) least-
    squares ``coefficients`` (t, 1 + d), intercept first; the training rows' (weighted) feature
    means ``mean_x``, ``weight_sum`` and ``inverse_gram`` (x_cᵀ W x_c)⁻¹ of the centred features,
    shared by the targets; each target's residual variance ``sigma2`` (t,); ``df_resid``."""
    d = accumulator.n_features
    factor = accumulator.factor()
    weight = ridge_solve(factor).T
    mean_x, mean_y = accumulator.mean[:d], accumulator.mean[d:]
    df_resid = accumulator.count - factor.rank - 1
    sigma2 = factor.rss / df_resid if df_resid > 0 else np.full(accumulator.n_targets, np.nan)
    return {
        "coefficients": np.hstack([(mean_y - weight @ mean_x)[:, None], weight]).tolist(),
        "mean_x": mean_x.tolist(),
        "weight_sum": float(accumulator.weight_sum),
        "inverse_gram": coefficient_inverse_gram(factor).tolist(),
        "sigma2": sigma2.tolist(),
        "df_resid": int(df_resid),
    }


def prediction_intervals(
    fit: dict, x: np.ndarray, level: float = 0.95, weight: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Intervals of the least-squares prediction for rows x (n, d), each (n, t), from
    ``least_squares_fit``: ``mean`` and its confidence interval ``mean_lower``/``mean_upper``,
    and the interval of a new observation ``lower``/``upper``, whose variance sigma² / w takes
    the row's ``weight`` (n,) when given, else 1 (statsmodels' ``get_prediction(...).summary_frame()``).

    Examples
    --------
    >>> from linreg_pl.exact.solvers import Moments
    >>> x = np.arange(6.0)[:, None]
    >>> y = 2 * x + 1 + np.array([[0.1], [-0.1], [0.0], [0.1], [-0.1], [0.0]])
    >>> bands = prediction_intervals(least_squares_fit(Moments.of(x, y)), np.array([[2.5]]))
    >>> [round(float(bands[k][0, 0]), 4) for k in ("mean", "mean_lower", "mean_upper", "lower", "upper")]
    [6.0, 5.8899, 6.1101, 5.7088, 6.2912]
    """
    if not 0 < level < 1:
        raise InputError(f"interval={level!r} must be in (0, 1), e.g. 0.95 for 95% intervals.")
    coefficients, inverse_gram, mean_x = (np.asarray(fit[k]) for k in ("coefficients", "inverse_gram", "mean_x"))
    sigma2, df_resid = np.asarray(fit["sigma2"], np.float64), fit["df_resid"]
    if df_resid < 1:
        raise InputError(
            f"the least-squares fit has {df_resid} residual degrees of freedom: no interval exists; "
            "train on more rows than parameters."
        )
    x = np.asarray(x, np.float64)
    mean = x @ coefficients[:, 1:].T + coefficients[:, 0]
    # zᵀ(ZᵀWZ)⁻¹z for z = [1, x], in centred coordinates where it is 1/Σw + x_cᵀ A x_c: the
    # uncentred form loses digits to cancellation when a column sits far from 0 (a year).
    centred = x - mean_x
    leverage = (1 / fit["weight_sum"] + ((centred @ inverse_gram) * centred).sum(axis=1))[:, None]  # (n, 1)
    row_weight = np.ones((len(x), 1)) if weight is None else np.asarray(weight, np.float64).reshape(-1, 1)
    quantile = scipy.special.stdtrit(df_resid, (1 + level) / 2)
    with np.errstate(divide="ignore"):
        mean_half = quantile * np.sqrt(leverage * sigma2)
        observation_half = quantile * np.sqrt(leverage * sigma2 + sigma2 / row_weight)
    return {
        "mean": mean,
        "mean_lower": mean - mean_half,
        "mean_upper": mean + mean_half,
        "lower": mean - observation_half,
        "upper": mean + observation_half,
    }


def meat_sandwich(
    meat: dict[str, np.ndarray],
    kind: str,
    inverse_gram: np.ndarray,
    target: int,
    mean_x: np.ndarray,
    accumulator: Accumulator,
    fit_intercept: bool,
) -> np.ndarray:
    """The robust covariance of one target's parameters, intercept first, in original units.

    The meat is accumulated in centred coordinates z_c = [1, x - m], where (Z_cᵀWZ_c)⁻¹ is
    block-diagonal; the map [b_c, w] -> [b, w] with b = b_c - mᵀw brings it back.
    """
    count = accumulator.count
    middle = meat["hc3" if kind == "hc3" else "hc0"][target]
    if not fit_intercept:
        bread = inverse_gram
        covariance = bread @ middle @ bread
    else:
        d = len(mean_x)
        bread = scipy.linalg.block_diag(1 / accumulator.weight_sum, inverse_gram[1:, 1:])
        centred = bread @ middle @ bread
        back = np.eye(d + 1)
        back[0, 1:] = -mean_x
        covariance = back @ centred @ back.T
    if kind == "hc1":
        covariance = covariance * count / (count - len(covariance))
    return covariance


class SandwichMeat:
    """Second pass over the rows for HC1/HC3 robust standard errors: Σ e_i² z_i z_iᵀ and
    Σ (e_i / (1 - h_i))² z_i z_iᵀ per target, given the first pass's fit. With row weights, of
    the rows scaled by sqrt(w) (statsmodels' WLS): Σ w_i² e_i² z_i z_iᵀ, and h_i = w_i z_iᵀ(ZᵀWZ)⁻¹z_i.

    ``update`` with the same rows as the first pass, each once; ``compute`` returns
    ``{"hc0": (t, p, p), "hc3": (t, p, p)}`` for ``ols_inference(..., meat=...)``. This costs a
    second pass over the data: the residual and the leverage of each row are not in the
    sufficient statistics. A plain accumulator, as ``ExactLeastSquares``.
    """

    def __init__(self, accumulator: Accumulator, fit_intercept: bool = True) -> None:
        d, t = accumulator.n_features, accumulator.n_targets
        factor = accumulator.factor(fit_intercept=fit_intercept)
        self.weight = ridge_solve(factor).T
        self.mean_x = accumulator.mean[:d] if fit_intercept else np.zeros(d)
        self.bias = accumulator.mean[d:] - self.weight @ self.mean_x if fit_intercept else np.zeros(t)
        self.inverse = coefficient_inverse_gram(factor)
        self.weight_sum, self.fit_intercept = accumulator.weight_sum, fit_intercept
        width = d + int(fit_intercept)
        self.sums = {name: np.zeros((t, width, width)) for name in ("hc0", "hc3")}

    def update(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> None:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        row_weight = np.ones(len(x)) if weight is None else np.asarray(weight, np.float64)
        centred = x - self.mean_x
        # w e: squared, the (sqrt(w) e)² (sqrt(w) z)(sqrt(w) z)ᵀ of the rows scaled by sqrt(w).
        residual = (y - x @ self.weight.T - self.bias) * row_weight[:, None]  # (m, t)
        leverage = ((centred @ self.inverse) * centred).sum(axis=1)
        z = np.hstack([np.ones((len(x), 1)), centred]) if self.fit_intercept else centred
        if self.fit_intercept:
            leverage = leverage + 1 / self.weight_sum
        leverage = leverage * row_weight
        for name, weights in (("hc0", residual**2), ("hc3", (residual / (1 - leverage)[:, None]) ** 2)):
            self.sums[name] += np.stack([(z * weights[:, [j]]).T @ z for j in range(weights.shape[1])])  # BLAS

    def compute(self) -> dict[str, np.ndarray]:
        return {name: total.copy() for name, total in self.sums.items()}


def ridge_path(accumulator: Accumulator, l2_grid: list[float] | np.ndarray, scaling: Scaling | None = None) -> dict:
    """Generalized cross-validation error of the model's ridge fit for every ``l2`` in the grid.

    Same objective as the model and ``Accumulator.solve``: standardized space of ``scaling``,
    ``l2`` on the (weighted) mean squared error averaged over targets, intercept not penalized.
    From the SVD of the centred design's factor r_xx = U S Vᵀ and z = Uᵀ r_xy, for n rows of
    weights summing to W (W = n unweighted) and the penalty a = W t l2 on the sums of squares::

        RSS(a) = RSS(0) + Σ_k (a / (s_k² + a))² z_k²,    df(a) = 1 + Σ_k s_k² / (s_k² + a)
        GCV(a) = RSS(a) / W / (1 - df(a) / n)²

    Exact leave-one-out error needs each row's leverage and residual, which the sufficient
    statistics do not hold (GCV is its rotation-invariant version): that would be a second pass.

    Returns
    -------
    dict
        ``l2`` (the grid), ``gcv`` (mean over targets, in the standardized target units the
        training loss uses), ``gcv_per_target``, ``effective_df``, ``best_l2``, ``best_gcv``.

    Examples
    --------
    >>> from linreg_pl.exact.solvers import Moments
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(50, 3))
    >>> y = x @ [[1.0], [0.0], [0.0]] + rng.normal(size=(50, 1))
    >>> path = ridge_path(Moments.of(x, y), [0.0, 0.01, 0.1, 1.0])
    >>> path["effective_df"][0], path["best_l2"] in path["l2"]
    (4.0, True)
    """
    grid = np.asarray(l2_grid, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid < 0):
        raise InputError(f"l2_grid must be a non-empty list of finite values >= 0, got {list(grid)!r}.")
    n, t = accumulator.count, accumulator.n_targets
    scaling = scaling or Scaling.identity(accumulator.n_features, t)
    factor = accumulator.factor(scaling, fit_intercept=True)
    u, s, _ = np.linalg.svd(factor.r_xx)
    z2 = np.square(u.T @ factor.r_xy)  # (d, t)
    s2 = np.square(s)[:, None]
    penalty = (accumulator.weight_sum * t * grid)[None, :]  # (1, g)
    total = s2 + penalty
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.where(total > 0, s2 / total, 0.0)  # (d, g)
    rss = factor.rss[None, :] + ((1 - shrink) ** 2).T @ z2  # (g, t)
    effective_df = 1 + shrink.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        gcv = rss / accumulator.weight_sum / (1 - effective_df / n)[:, None] ** 2  # (g, t)
    mean_gcv = gcv.mean(axis=1)
    best = int(np.nanargmin(mean_gcv))
    return _plain(
        {
            "l2": grid,
            "gcv": mean_gcv,
            "gcv_per_target": gcv.T,
            "effective_df": effective_df,
            "best_l2": grid[best],
            "best_gcv": mean_gcv[best],
        }
    )


def format_coefficient_table(inference: dict) -> str:
    """A compact coefficient table per target, like statsmodels' summary.

    Examples
    --------
    >>> from linreg_pl.exact.solvers import Moments
    >>> x = np.arange(8.0)[:, None]
    >>> y = 0.5 * x + np.array([[0.3], [-0.2], [0.1], [0.0], [-0.3], [0.2], [0.1], [-0.1]])
    >>> print(format_coefficient_table(ols_inference(Moments.of(x, y), ["x"], ["y"])))
    y: n 8, df 1/6, R² 0.97251, adj R² 0.96793, F 212.28 (p 6.56e-06),
      log-lik 2.0769, AIC -0.15374, BIC 0.0051391, residual SE 0.21552
                     coef   std err         t     P>|t|    [0.025    0.975]
    intercept     0.06667    0.1391    0.4792    0.6488   -0.2737    0.4071
    x              0.4845   0.03326     14.57 6.558e-06    0.4032    0.5659
    """
    low, high = (1 - inference["level"]) / 2, (1 + inference["level"]) / 2
    width = max(len(p) for fit in inference["targets"].values() for p in fit["parameters"]) + 2
    lines = []
    for name, fit in inference["targets"].items():
        lines.append(
            f"{name}: n {inference['n_observations']}, df {inference['df_model']}/{inference['df_resid']}, "
            f"R² {_g(fit['r_squared'])}, adj R² {_g(fit['adj_r_squared'])}, F {_g(fit['f_statistic'])} "
            f"(p {_g(fit['f_p_value'], 3)}),\n  log-lik {_g(fit['log_likelihood'])}, AIC {_g(fit['aic'])}, "
            f"BIC {_g(fit['bic'])}, residual SE {_g(fit['residual_std_error'])}"
        )
        robust = [kind for kind in ("hc1", "hc3") if kind in fit]
        header = ["coef", "std err", "t", "P>|t|", f"[{low:.3g}", f"{high:.3g}]"] + [f"{k.upper()} se" for k in robust]
        lines.append(" " * width + "".join(f"{h:>11}" for h in header))
        for i, parameter in enumerate(fit["parameters"]):
            values = [fit[key][i] for key in ("estimate", "std_error", "t", "p_value", "ci_low", "ci_high")]
            values += [fit[kind]["std_error"][i] for kind in robust]
            lines.append(f"{parameter:<{width}}" + "".join(f"{_g(v, 4):>11}" for v in values))
    return "\n".join(lines)


def _g(value: float | None, digits: int = 5) -> str:
    return "nan" if value is None else f"{value:.{digits}g}"


def _plain(value):
    """numpy values to JSON-ready Python values; NaN and infinities (which JSON lacks) to None."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
