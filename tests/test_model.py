"""The §5.1.3 network, w0 and local training (p2p_job.model, p2p_job.training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from p2p_job.model import build_model, initial_state, load_model_state, model_state
from p2p_job.spec import TrainingSpec, parse_experiment
from p2p_job.training import make_optimizer, predict_scores, resolve_device, train_local

CPU = torch.device("cpu")


def _experiment(seed: int, hidden=(80, 50, 10)):
    doc = {
        "apiVersion": "p2pk.io/v1alpha1",
        "kind": "P2PExperiment",
        "metadata": {"name": "model-test"},
        "spec": {
            "seed": seed,
            "rounds": 1,
            "scenario": {"preset": "builtin-5.2.1"},
            "training": {"hiddenLayers": list(hidden)},
        },
    }
    return parse_experiment(doc)


def _separable(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two well-separated blobs in [0, 1]^d: label 1 around 0.7, label 0 around 0.3."""
    g = np.random.default_rng(seed)
    y = (g.random(n) < 0.5).astype(np.int8)
    X = (0.3 + 0.4 * y[:, None] + 0.05 * g.standard_normal((n, d))).astype(np.float32)
    return X, y


def _trained_state(seed: int, training: TrainingSpec, X, y) -> dict[str, np.ndarray]:
    """Train from w0 with the generator seeded ``seed``; check the global RNG is left alone."""
    model = build_model(X.shape[1], training)
    load_model_state(model, initial_state(_experiment(0, training.hidden_layers), X.shape[1]))
    optimizer = make_optimizer(model, training)
    before = torch.random.get_rng_state()
    train_local(model, optimizer, X, y, training, CPU, seed)
    assert torch.equal(torch.random.get_rng_state(), before)
    return model_state(model)


def test_network_layers_follow_the_spec():
    training = TrainingSpec(dropout=0.3, leaky_relu_slope=0.05)
    model = build_model(115, training)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(115, 80), (80, 50), (50, 10), (10, 1)]
    assert [m.num_features for m in model if isinstance(m, nn.BatchNorm1d)] == [80, 50, 10]
    assert [m.negative_slope for m in model if isinstance(m, nn.LeakyReLU)] == [0.05] * 3
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.3] * 3
    # One hidden block is Linear, BatchNorm, LeakyReLU, Dropout; the output is one logit.
    assert [type(m) for m in list(model)[:4]] == [nn.Linear, nn.BatchNorm1d, nn.LeakyReLU, nn.Dropout]
    model.eval()
    assert model(torch.zeros(4, 115)).shape == (4, 1)


def test_hidden_layers_are_configurable():
    model = build_model(6, TrainingSpec(hidden_layers=[7, 3]))
    linears = [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]
    assert linears == [(6, 7), (7, 3), (3, 1)]


def test_state_holds_parameters_and_batchnorm_statistics_as_float32():
    state = initial_state(_experiment(1, hidden=(4,)), 3)
    assert sorted(state) == ["0.bias", "0.weight", "1.bias", "1.running_mean", "1.running_var", "1.weight", "4.bias", "4.weight"]
    assert all(v.dtype == np.float32 for v in state.values())
    assert state["0.weight"].shape == (4, 3)


def test_w0_depends_on_the_seed_only():
    a, b = initial_state(_experiment(7), 10), initial_state(_experiment(7), 10)
    c = initial_state(_experiment(8), 10)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["0.weight"], c["0.weight"])


def test_load_model_state_round_trips_and_rejects_wrong_shapes():
    training = TrainingSpec(hidden_layers=[5])
    state = initial_state(_experiment(3, hidden=(5,)), 4)
    model = build_model(4, training)
    load_model_state(model, state)
    assert all(np.array_equal(model_state(model)[k], state[k]) for k in state)
    with pytest.raises(ValueError, match=r"0\.weight has shape \(5, 3\), expected \(5, 4\)"):
        load_model_state(model, {**state, "0.weight": np.zeros((5, 3), np.float32)})
    with pytest.raises(ValueError, match="missing tensors"):
        load_model_state(model, {k: v for k, v in state.items() if k != "0.bias"})


def test_training_is_bit_identical_under_the_same_seed_and_leaves_global_rng_alone():
    training = TrainingSpec(hidden_layers=[16, 8], local_epochs=2, batch_size=32, learning_rate=1e-3)
    X, y = _separable(300, 5, 0)
    first = _trained_state(11, training, X, y)
    second = _trained_state(11, training, X, y)
    other = _trained_state(12, training, X, y)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert not all(np.array_equal(first[k], other[k]) for k in first)


def test_training_learns_separable_data():
    training = TrainingSpec(hidden_layers=[16, 8], local_epochs=20, batch_size=32, learning_rate=1e-2)
    X, y = _separable(400, 5, 1)
    model = build_model(5, training)
    before = float(nn.BCELoss()(torch.from_numpy(predict_scores(model, X, CPU)), torch.from_numpy(y).float()))
    loss = train_local(model, make_optimizer(model, training), X, y, training, CPU, 0)
    scores = predict_scores(model, X, CPU)
    assert loss < before
    assert ((scores >= 0.5) == (y == 1)).mean() > 0.95
    assert scores.dtype == np.float32 and ((scores >= 0) & (scores <= 1)).all()


def test_a_single_leftover_row_does_not_break_batch_norm():
    training = TrainingSpec(hidden_layers=[4], local_epochs=1, batch_size=8)
    X, y = _separable(17, 3, 2)  # 8 + 8 + 1
    model = build_model(3, training)
    loss = train_local(model, make_optimizer(model, training), X, y, training, CPU, 0)
    assert np.isfinite(loss)


def test_training_needs_two_rows():
    training = TrainingSpec(hidden_layers=[4])
    model = build_model(3, training)
    with pytest.raises(ValueError, match="at least 2 training rows, got 1"):
        train_local(model, make_optimizer(model, training), np.zeros((1, 3), np.float32), np.zeros(1, np.int8), training, CPU, 0)


def test_device_resolution():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")
