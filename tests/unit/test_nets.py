import numpy as np
import pytest
import torch
from torch import nn

from linreg_pl import MLP, LinearHead, Scaling
from linreg_pl.nets import Standardizer
from tests.helpers import CONFIGS


def test_mlp_stacks_the_hidden_widths_with_the_activation_between():
    net = MLP(3, 2, hidden=(8, 4), activation="relu")
    kinds = [(type(m), getattr(m, "in_features", None), getattr(m, "out_features", None)) for m in net]
    assert kinds == [
        (nn.Linear, 3, 8),
        (nn.ReLU, None, None),
        (nn.Linear, 8, 4),
        (nn.ReLU, None, None),
        (nn.Linear, 4, 2),
    ]
    assert net(torch.zeros(5, 3)).shape == (5, 2)


def test_linear_head_is_a_linear_layer():
    head = LinearHead(2, 3)
    assert isinstance(head, nn.Linear) and head.weight.shape == (3, 2)


SCALING = Scaling(np.array([1.0, -2.0]), np.array([2.0, 0.5]), np.array([10.0]), np.array([3.0]))


def test_standardizer_maps_to_the_standardized_space_and_back():
    scaler = Standardizer(2, 1)
    scaler.scaling = SCALING
    x, y = torch.randn(6, 2), torch.randn(6, 1)
    torch.testing.assert_close(scaler.features(x), (x - torch.tensor([1.0, -2.0])) / torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(scaler.target(y), (y - 10.0) / 3.0)
    torch.testing.assert_close(scaler.to_original(scaler.target(y)), y)
    np.testing.assert_array_equal(scaler.scaling.feature_scale, SCALING.feature_scale)


def test_an_identity_standardizer_does_no_work_per_step():
    scaler, x = Standardizer(2, 1), torch.randn(4, 2)
    assert scaler.features(x) is x and scaler.target(x) is x


def test_the_standardization_travels_in_the_state_dict():
    trained = Standardizer(2, 1)
    trained.scaling = SCALING
    restored = Standardizer(2, 1)
    restored.load_state_dict(trained.state_dict())
    x = torch.randn(3, 2)
    torch.testing.assert_close(restored.features(x), trained.features(x))  # applied, not only copied
    assert set(trained.state_dict()) == {"feature_mean", "feature_scale", "target_mean", "target_scale"}
    np.testing.assert_array_equal(restored.scaling.feature_mean, SCALING.feature_mean)  # what it reports too


def test_the_scaling_reported_is_that_of_the_buffers_after_a_dtype_change():
    scaler = Standardizer(1, 1)
    scaler.scaling = Scaling(np.array([1 / 3]), np.ones(1), np.zeros(1), np.ones(1))
    assert scaler.scaling.feature_mean[0] == np.float32(1 / 3)
    scaler.half()  # rounds the buffers: the parameters are reported in the units the network is fed
    assert scaler.scaling.feature_mean[0] == np.float16(1 / 3) != np.float32(1 / 3)


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_mlp_activations(activation):
    assert MLP(1, 1, hidden=(2,), activation=activation)(torch.ones(1, 1)).shape == (1, 1)


@pytest.mark.slow
def test_the_mlp_config_on_the_curve_lesson_beats_the_line(train_run):
    common = ["--config", str(CONFIGS / "curve.yaml"), "--trainer.logger=false", "--trainer.enable_checkpointing=false"]
    line = train_run(*common)
    mlp = train_run(*common, "--config", str(CONFIGS / "model" / "mlp.yaml"), "--trainer.max_epochs=200")
    assert mlp["test_metrics"]["test/mse"] < line["test_metrics"]["test/mse"] / 10
    # the line is the least-squares line: what the curve costs a linear model, not a training failure
    np.testing.assert_allclose(line["learned"]["weight"], line["exact"]["weight"], rtol=1e-4)
