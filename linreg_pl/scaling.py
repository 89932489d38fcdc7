"""Scaling: the per-column standardization shared by the data, the model and the exact solver."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linreg_pl.errors import InputError


@dataclass
class Scaling:
    """Per-column affine maps x_s = (x - feature_mean) / feature_scale, likewise for the target.

    An identity map (mean 0, scale 1) stands for "not standardized".
    """

    feature_mean: np.ndarray
    feature_scale: np.ndarray
    target_mean: np.ndarray
    target_scale: np.ndarray

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        features: bool,
        target: bool,
        feature_names: list[str],
        target_names: list[str],
    ) -> Scaling:
        """Statistics of the training rows ``x``, ``y``; a constant column (named in the error)
        cannot be standardized."""
        identity = cls.identity(x.shape[1], y.shape[1])
        feature_mean, feature_scale = identity.feature_mean, identity.feature_scale
        target_mean, target_scale = identity.target_mean, identity.target_scale
        if features:
            feature_mean, feature_scale = x.mean(axis=0), x.std(axis=0)
            _check_not_constant(feature_scale, feature_names, "standardize_features")
        if target:
            target_mean, target_scale = y.mean(axis=0), y.std(axis=0)
            _check_not_constant(target_scale, target_names, "standardize_target")
        return cls(feature_mean, feature_scale, target_mean, target_scale)

    @classmethod
    def identity(cls, n_features: int, n_targets: int) -> Scaling:
        return cls(np.zeros(n_features), np.ones(n_features), np.zeros(n_targets), np.ones(n_targets))

    def to_original_units(self, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map parameters of y_s = x_s @ weight.T + bias back to y = x @ W.T + b, exactly."""
        weight, bias = np.asarray(weight, np.float64), np.asarray(bias, np.float64)
        with np.errstate(invalid="ignore", over="ignore"):  # a diverged model's: DivergenceGuard says so
            per_feature = weight / self.feature_scale
            original_weight = self.target_scale[:, None] * per_feature
            original_bias = self.target_scale * (bias - per_feature @ self.feature_mean) + self.target_mean
        return original_weight, original_bias


def _check_not_constant(scale: np.ndarray, names: list[str], option: str) -> None:
    constant = [name for name, s in zip(names, scale, strict=True) if not s > 0]
    if constant:
        raise InputError(
            f"column(s) {constant} are constant on the training split and cannot be standardized; "
            f"drop them or set data.{option}=false."
        )
