"""Networks for ``LinearRegression(net=...)``, and the standardization that wraps any of them.

A network is any ``nn.Module`` class (or factory) called as ``net(n_features, n_targets)``, the
sizes coming from the data: ``--model.net MLP --model.net.hidden [64,64]``, or a class of your
own on ``PYTHONPATH``, ``--model.net mynets.TwoLayer``. It maps standardized features to
standardized targets; ``Standardizer`` does the rest, so no network needs to know the data's units.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from linreg_pl.scaling import Scaling


class LinearHead(nn.Linear):
    """y = x @ W.T + b, the default network: the one whose coefficients the report tables, the
    exact least-squares reference checks, AutoSGD's "auto" step understands and the figures draw."""


class MLP(nn.Sequential):
    """A multilayer perceptron: ``hidden`` layers of the given widths with ``activation`` between
    them, then a linear output layer. Train it with a fixed learning rate (``--model.optimizer
    Adam``): AutoSGD's "auto" step is for linear models.

    Examples
    --------
    >>> MLP(3, 1, hidden=(8,))
    MLP(
      (0): Linear(in_features=3, out_features=8, bias=True)
      (1): Tanh()
      (2): Linear(in_features=8, out_features=1, bias=True)
    )
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: tuple[int, ...] = (64, 64),
        activation: Literal["tanh", "relu", "gelu"] = "tanh",
    ) -> None:
        act = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}[activation]
        widths = [in_features, *hidden]
        layers = [module for a, b in zip(widths[:-1], widths[1:], strict=True) for module in (nn.Linear(a, b), act())]
        super().__init__(*layers, nn.Linear(widths[-1], out_features))


class Standardizer(nn.Module):
    """The data module's per-column standardization as buffers, kept out of the network: any
    network then trains in the well-conditioned standardized space, and the buffers are saved next
    to its weights, so a checkpoint alone predicts in original units.

    An identity map (mean 0, scale 1) stands for "not standardized" and costs no work per step.
    """

    def __init__(self, n_features: int, n_targets: int) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_scale", torch.ones(n_features))
        self.register_buffer("target_mean", torch.zeros(n_targets))
        self.register_buffer("target_scale", torch.ones(n_targets))
        self._note()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.feature_mean) / self.feature_scale if self.scales_features else x

    def target(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.target_mean) / self.target_scale if self.scales_target else y

    def to_original(self, output: torch.Tensor) -> torch.Tensor:
        return output * self.target_scale + self.target_mean

    @property
    def scaling(self) -> Scaling:
        return self._scaling

    @scaling.setter
    def scaling(self, scaling: Scaling) -> None:
        for name in _BUFFERS:
            getattr(self, name).copy_(torch.as_tensor(getattr(scaling, name)))
        self._note()

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._note()

    def _apply(self, fn, recurse: bool = True):
        # .to(), .half(), .double() replace the buffers, and a narrower dtype rounds them.
        module = super()._apply(fn, recurse)
        self._note()
        return module

    def _note(self) -> None:
        # Known once here rather than worked out per step: the callbacks read the parameters in
        # original units at every logged step, and the buffers change only through here.
        self._scaling = Scaling(*(getattr(self, name).double().cpu().numpy() for name in _BUFFERS))
        self.scales_features = bool((self.feature_mean != 0).any() or (self.feature_scale != 1).any())
        self.scales_target = bool((self.target_mean != 0).any() or (self.target_scale != 1).any())


_BUFFERS = ("feature_mean", "feature_scale", "target_mean", "target_scale")
