"""The anomaly detector of §5.1.3 and its weights as plain arrays.

A feed-forward network ``n_features → 80 → 50 → 10 → 1`` (hidden sizes from
``spec.training.hiddenLayers``): every hidden layer is Linear → BatchNorm → LeakyReLU → Dropout,
and the last Linear gives one logit. The paper's sigmoid output is applied by the loss
(``BCEWithLogitsLoss``, numerically stable) and by :func:`p2p_job.training.predict_scores`.

Weights travel between peers, checkpoints and runners as ``dict[str, np.ndarray]`` (float32):
every parameter and the BatchNorm running statistics (``running_mean``, ``running_var``).
BatchNorm's ``num_batches_tracked`` counter is not part of it: it only matters when BatchNorm has
no momentum, and ours uses the default momentum, so averaging it (eq. 5) would be meaningless.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from p2p_job.seeding import torch_seed
from p2p_job.spec import P2PExperiment, TrainingSpec

#: Weights of a model as arrays: parameters and BatchNorm running statistics, float32.
State = dict[str, np.ndarray]


def build_model(n_features: int, training: TrainingSpec) -> nn.Module:
    """The §5.1.3 network: per hidden layer Linear, BatchNorm, LeakyReLU, Dropout; one output logit."""
    if n_features < 1:
        raise ValueError(f"build_model: n_features must be positive, got {n_features}")
    layers: list[nn.Module] = []
    width = n_features
    for units in training.hidden_layers:
        layers += [
            nn.Linear(width, units),
            nn.BatchNorm1d(units),
            nn.LeakyReLU(training.leaky_relu_slope),
            nn.Dropout(training.dropout),
        ]
        width = units
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _exchanged(name: str, tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and not name.endswith("num_batches_tracked")


def model_state(model: nn.Module) -> State:
    """The model's weights as float32 arrays (parameters and BatchNorm running statistics)."""
    return {
        name: t.detach().to("cpu", torch.float32).numpy().copy()
        for name, t in model.state_dict().items()
        if _exchanged(name, t)
    }


def load_model_state(model: nn.Module, state: State) -> None:
    """Copy ``state`` into ``model`` in place (on the model's device); the names and shapes
    must be exactly those of :func:`model_state`."""
    own = {name: t for name, t in model.state_dict().items() if _exchanged(name, t)}
    if own.keys() != state.keys():
        missing, extra = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
        raise ValueError(f"model state: missing tensors {missing}, unexpected tensors {extra}")
    with torch.no_grad():
        for name, target in own.items():
            value = state[name]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"model state: {name} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
            target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def initial_state(exp: P2PExperiment, n_features: int) -> State:
    """w0 (Algorithm 2, lines 1–2): the initial weights, derived from the experiment seed only,
    so every peer of every method builds the same ones with no coordinator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed(exp.spec.seed, "initial-model"))
        return model_state(build_model(n_features, exp.spec.training))
