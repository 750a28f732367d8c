"""Local training and scoring (§5.1.3; Algorithm 2, lines 8–10; equation 4).

Adam with the spec's learning rate and weight decay minimises binary cross-entropy on the
sigmoid of the model's logit for ``localEpochs`` passes over the training set in batches of
``batchSize``. The loop is kept tight: the training set moves to the device once per call,
every epoch draws one index permutation, and batches are slices of it (no DataLoader).

Determinism: the batch order comes from the ``torch.Generator`` the caller passes, and dropout's
random masks from a global seed drawn from that same generator inside ``torch.random.fork_rng``
(the process-wide random state is left as it was). On the CPU the same generator seed gives the
same weights to the bit.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from p2p_job.spec import TrainingSpec

#: Rows scored per forward pass in :func:`predict_scores` (bounds memory on large test sets).
SCORE_BATCH = 65_536


class DeviceError(RuntimeError):
    """The requested device cannot be used (e.g. ``cuda`` without a CUDA device)."""


def resolve_device(name: str) -> torch.device:
    """``runtime.device``: ``auto`` is CUDA when available, else the CPU; ``cuda`` must be there
    (else :class:`DeviceError`)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("runtime.device is 'cuda' but PyTorch sees no CUDA device (use 'auto' or 'cpu')")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"runtime.device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def make_optimizer(model: nn.Module, training: TrainingSpec) -> torch.optim.Optimizer:
    """Adam with the spec's learning rate (η of eq. 4) and weight decay (§5.1.3)."""
    return torch.optim.Adam(model.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay)


def _batches(n: int, batch_size: int, order: torch.Tensor) -> list[torch.Tensor]:
    """Index slices of one epoch. BatchNorm cannot train on a single row, so a last batch of
    one row is left out of that epoch (the shuffle puts a different row there each epoch)."""
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def train_local(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    X: np.ndarray,
    y: np.ndarray,
    training: TrainingSpec,
    device: torch.device,
    generator: torch.Generator,
) -> float:
    """Train ``model`` (already on ``device``) for ``training.local_epochs`` epochs on (X, y)
    (Algorithm 2, lines 8–10) and return the mean loss of the last epoch."""
    if len(X) < 2:
        raise ValueError(f"train_local: need at least 2 training rows, got {len(X)}")
    X_t = torch.as_tensor(X, dtype=torch.float32).to(device)
    y_t = torch.as_tensor(y, dtype=torch.float32).to(device).unsqueeze(1)
    loss_fn = nn.BCEWithLogitsLoss()
    dropout_seed = int(torch.randint(2**62, (1,), generator=generator))
    cuda = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    model.train()
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(dropout_seed)
        for _ in range(training.local_epochs):
            order = torch.randperm(len(X_t), generator=generator).to(device)
            total = torch.zeros((), device=device)
            seen = 0
            for idx in _batches(len(X_t), training.batch_size, order):
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(X_t[idx]), y_t[idx])
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(idx)
                seen += len(idx)
    return float(total) / seen


def predict_logits(model: nn.Module, X: np.ndarray, device: torch.device) -> np.ndarray:
    """The model's logit for each row (float32), in evaluation mode."""
    model.eval()
    out = np.empty(len(X), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(X), SCORE_BATCH):
            chunk = torch.as_tensor(X[start : start + SCORE_BATCH], dtype=torch.float32).to(device)
            out[start : start + SCORE_BATCH] = model(chunk).squeeze(1).cpu().numpy()
    return out


def predict_scores(model: nn.Module, X: np.ndarray, device: torch.device) -> np.ndarray:
    """P(malicious) for each row: the sigmoid of the model's logit, in evaluation mode."""
    logits = torch.from_numpy(predict_logits(model, X, device))
    return torch.sigmoid(logits).numpy()
