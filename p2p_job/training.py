"""Local training and scoring (§5.1.3; Algorithm 2, lines 8–10; equation 4).

Adam with the spec's learning rate and weight decay minimises binary cross-entropy on the
sigmoid of the model's logit for ``localEpochs`` passes over the training set in batches of
``batchSize``.

**One engine for one peer or many.** :func:`train_many` trains any number of models of the
same architecture at once — the peers of one method, or of every method of a simulation — in
one batched forward/backward/optimizer step per batch: every layer's weights are stacked along
a leading client axis (``(C, out, in)``), Linear layers are batched matrix products
(``torch.baddbmm``), BatchNorm takes its statistics per client over that client's rows only,
and Adam is one fused update of a flat ``(C, P)`` buffer that holds every parameter of every
client. Nothing mixes clients: each keeps its own rows, batch order, dropout masks, BatchNorm
running statistics, Adam moments and step count. :func:`train_local` is the same engine for a
single peer (``p2pk worker``, ``p2pk simulate --engine per-peer``), so the loop is written once.

Clients' data sets differ in size, so they take different numbers of steps. Clients are
ordered by their number of steps, most first; at step ``s`` the clients still training are a
prefix of the stack, and the step works on that prefix only (views, no copies), so a finished
client's weights, Adam state and statistics do not move. A client whose batch is shorter (the
last of an epoch) is padded to ``batchSize`` rows with weight 0: its BatchNorm statistics and
loss are taken over its real rows only (row weights), so the padding changes nothing.

Determinism: everything random is keyed by the task's ``seed``: the batch order (a
``torch.Generator``: one permutation per epoch, batches are slices of it) and the dropout masks
(a numpy ``Generator``: per step, ``rows × Σ hidden units`` float32 uniforms, kept where below
``1 − dropout``). The masks are drawn on the CPU whatever the device, so CPU and CUDA use the
same ones. A client's numbers do not depend on the other clients in the stack; on the CPU,
training a peer alone or in any stack agrees to float rounding (tests/test_training.py states
the tolerance). The process-wide random state is not touched.

**Scoring** (:func:`predict_scores`) runs the ``nn.Module`` in evaluation mode.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from p2p_job.spec import TrainingSpec

#: Rows scored per forward pass in :func:`predict_scores` (bounds memory on large test sets).
SCORE_BATCH = 65_536


class DeviceError(RuntimeError):
    """The requested device cannot be used (e.g. ``cuda`` without a CUDA device)."""


def set_cpu_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in PyTorch (intra-op) and in the BLAS and OpenMP libraries
    numpy, scipy and scikit-learn call (K-SMOTE's matrix products, SMOTE's neighbour search),
    for the rest of the process. Both are set on purpose: on a shared machine a BLAS left to
    its default (every core) spun waiting for busy cores and made K-SMOTE 25× slower
    (benchmarks/README.md)."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)


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
    """Adam with the spec's learning rate (η of eq. 4) and weight decay (§5.1.3). It holds the
    peer's Adam state (``exp_avg``, ``exp_avg_sq``, ``step`` per parameter, PyTorch's format, as
    checkpoints save it) and its hyper-parameters; :func:`train_many` does the update."""
    return torch.optim.Adam(model.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay)


@dataclass(frozen=True)
class TrainingTask:
    """One peer's local training of one round: its model (on the device) and Adam, its rows
    (D_base ∪ D_syn ∪ D_o_syn, scaled) and the seed of its batch order and dropout masks."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    X: np.ndarray
    y: np.ndarray
    seed: int


def train_local(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    X: np.ndarray,
    y: np.ndarray,
    training: TrainingSpec,
    device: torch.device,
    seed: int,
) -> float:
    """Train one ``model`` (already on ``device``) for ``training.local_epochs`` epochs on (X, y)
    (Algorithm 2, lines 8–10) and return the mean loss of the last epoch: :func:`train_many`
    with one task."""
    return train_many([TrainingTask(model, optimizer, X, y, seed)], training, device)[0]


# --------------------------------------------------------------------------- the network, stacked


@dataclass(frozen=True)
class _Hidden:
    """One hidden block of the §5.1.3 network (p2p_job.model): Linear, BatchNorm, LeakyReLU, Dropout."""

    eps: float
    momentum: float
    slope: float
    dropout: float
    units: int


def _blocks(model: nn.Module) -> list[_Hidden]:
    """The hidden blocks of a :func:`p2p_job.model.build_model` network, read from its modules."""
    layers = list(model)
    blocks = []
    for i in range(0, len(layers) - 1, 4):
        linear, bn, act, drop = layers[i : i + 4]
        if not (isinstance(linear, nn.Linear) and isinstance(bn, nn.BatchNorm1d)
                and isinstance(act, nn.LeakyReLU) and isinstance(drop, nn.Dropout)):
            raise TypeError(f"train_many: layers {i}–{i + 3} are not Linear, BatchNorm1d, LeakyReLU, Dropout")
        blocks.append(_Hidden(bn.eps, bn.momentum, act.negative_slope, drop.p, linear.out_features))
    if not isinstance(layers[-1], nn.Linear):
        raise TypeError("train_many: the last layer is not Linear")
    return blocks


def _batches(n: int, batch_size: int, order: torch.Tensor) -> list[torch.Tensor]:
    """Index slices of one epoch. BatchNorm cannot train on a single row, so a last batch of
    one row is left out of that epoch (the shuffle puts a different row there each epoch)."""
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


class _Stack:
    """The parameters, BatchNorm statistics and Adam state of C models as stacked tensors.

    ``flat`` (C, P) holds every parameter of every client (row c: client c's parameters in
    ``model.parameters()`` order); ``grad``, ``exp_avg`` and ``exp_avg_sq`` have its shape,
    ``step`` (C,) counts each client's Adam steps before this training. ``params(k)`` gives the first k clients'
    parameters as leaf tensors that are views of ``flat`` with gradients that are views of
    ``grad``. BatchNorm running statistics are (C, units) per layer."""

    def __init__(self, tasks: list[TrainingTask], device: torch.device):
        models = [t.model for t in tasks]
        self.shapes = [tuple(p.shape) for p in models[0].parameters()]
        sizes = [int(np.prod(s)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        C, P = len(tasks), self.offsets[-1]
        with torch.no_grad():
            self.flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in models]).to(device)
            norms = [_batch_norms(m) for m in models]
            self.running = [
                [torch.stack([getattr(bns[j], name).detach() for bns in norms]).to(device) for j in range(len(norms[0]))]
                for name in ("running_mean", "running_var")
            ]
            self.exp_avg = torch.zeros(C, P, device=device)
            self.exp_avg_sq = torch.zeros(C, P, device=device)
            self.step = np.zeros(C)
            for c, task in enumerate(tasks):
                for i, p in enumerate(task.model.parameters()):
                    state = task.optimizer.state.get(p)
                    if state:
                        lo, hi = self.offsets[i], self.offsets[i + 1]
                        self.exp_avg[c, lo:hi] = state["exp_avg"].reshape(-1)
                        self.exp_avg_sq[c, lo:hi] = state["exp_avg_sq"].reshape(-1)
                        self.step[c] = float(state["step"])
        self.grad = torch.zeros_like(self.flat)
        group = tasks[0].optimizer.param_groups[0]
        self.lr, self.weight_decay, (self.beta1, self.beta2), self.eps = group["lr"], group["weight_decay"], group["betas"], group["eps"]
        self._leaves: tuple[int, list[torch.Tensor]] | None = None

    def params(self, k: int) -> list[torch.Tensor]:
        """The first k clients' parameters, shaped (k, *shape), as leaves of the autograd graph."""
        if self._leaves is None or self._leaves[0] != k:
            leaves = []
            for i, shape in enumerate(self.shapes):
                lo, hi = self.offsets[i], self.offsets[i + 1]
                leaf = self.flat[:k, lo:hi].view(k, *shape).detach().requires_grad_()
                leaf.grad = self.grad[:k, lo:hi].view(k, *shape)
                leaves.append(leaf)
            self._leaves = (k, leaves)
        return self._leaves[1]

    def bias_corrections(self, n_steps: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Adam's per-step factors for every client and step of this training, (S, C, 1) each:
        ``lr / (1 − β1^t)`` and ``sqrt(1 − β2^t)`` at the client's step count t (in float64,
        then float32), so a step reads them instead of computing them. Counts the steps."""
        t = self.step[None, :] + np.arange(1, max(n_steps) + 1)[:, None]
        step_size = self.lr / (1 - self.beta1**t)
        bias_correction2_sqrt = np.sqrt(1 - self.beta2**t)
        self.step = self.step + np.asarray(n_steps)
        return tuple(torch.as_tensor(a, dtype=torch.float32, device=device).unsqueeze(2) for a in (step_size, bias_correction2_sqrt))

    @torch.no_grad()
    def adam_step(self, k: int, step_size: torch.Tensor, bias_correction2_sqrt: torch.Tensor) -> None:
        """One Adam step (PyTorch's, with L2 weight decay added to the gradient) for the first
        k clients, over their whole parameter rows at once, each with its own bias corrections
        (``(k, 1)``, from :meth:`bias_corrections`)."""
        param, grad, m, v = self.flat[:k], self.grad[:k], self.exp_avg[:k], self.exp_avg_sq[:k]
        if self.weight_decay:
            grad.add_(param, alpha=self.weight_decay)
        m.lerp_(grad, 1 - self.beta1)
        v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        denom = v.sqrt().div_(bias_correction2_sqrt).add_(self.eps)
        param.sub_(denom.reciprocal_().mul_(m).mul_(step_size))

    @torch.no_grad()
    def write_back(self, tasks: list[TrainingTask]) -> None:
        """Copy every client's weights, statistics and Adam state into its model and optimizer."""
        flat, m, v = self.flat, self.exp_avg, self.exp_avg_sq
        steps = self.step.tolist()
        for c, task in enumerate(tasks):
            for i, p in enumerate(task.model.parameters()):
                lo, hi = self.offsets[i], self.offsets[i + 1]
                p.copy_(flat[c, lo:hi].view_as(p))
                task.optimizer.state[p] = {
                    "step": torch.tensor(steps[c]),
                    "exp_avg": m[c, lo:hi].reshape(p.shape).clone(),
                    "exp_avg_sq": v[c, lo:hi].reshape(p.shape).clone(),
                }
            for j, bn in enumerate(_batch_norms(task.model)):
                bn.running_mean.copy_(self.running[0][j][c])
                bn.running_var.copy_(self.running[1][j][c])


def _batch_norms(model: nn.Module) -> list[nn.BatchNorm1d]:
    return [m for m in model if isinstance(m, nn.BatchNorm1d)]


def _schedule(task: TrainingTask, training: TrainingSpec) -> torch.Tensor:
    """A client's row numbers for every step of its local training, (steps, batchSize), -1 where
    a last batch is shorter: one permutation per epoch from the task's seeded generator,
    batches are slices of it (:func:`_batches`)."""
    generator = torch.Generator().manual_seed(task.seed)
    n, B = len(task.X), training.batch_size
    steps = []
    for _ in range(training.local_epochs):
        for batch in _batches(n, B, torch.randperm(n, generator=generator)):
            steps.append(torch.nn.functional.pad(batch, (0, B - len(batch)), value=-1))
    return torch.stack(steps)


def _batch_norm(h, gamma, beta, mean_run, var_run, block: _Hidden, w, n, full: bool) -> torch.Tensor:
    """BatchNorm of k clients' activations ``h`` (k, units, B): each (client, unit) normalised
    over that client's rows. ``full``: every client has B real rows, so PyTorch's own kernel
    does it with (client, unit) as its channels; else the statistics are weighted sums over
    the real rows (``w`` (k, 1, B) row weights, ``n`` (k, 1, 1) row counts). Both update the
    running statistics (``mean_run``, ``var_run``: (k, units) views) as ``nn.BatchNorm1d`` does."""
    k, units, B = h.shape
    if full:
        out = torch.nn.functional.batch_norm(
            h.view(1, k * units, B), mean_run.view(-1), var_run.view(-1), gamma.reshape(-1), beta.reshape(-1),
            training=True, momentum=block.momentum, eps=block.eps,
        )
        return out.view(k, units, B)
    mean = (h * w).sum(2, keepdim=True) / n
    centred = (h - mean) * w
    var = (centred * centred).sum(2, keepdim=True) / n  # biased, as BatchNorm normalises
    with torch.no_grad():  # the running variance is the unbiased one, as BatchNorm keeps it
        mean_run.lerp_(mean.squeeze(2), block.momentum)
        var_run.lerp_((var * (n / (n - 1))).squeeze(2), block.momentum)
    return centred * torch.rsqrt(var + block.eps) * gamma.unsqueeze(2) + beta.unsqueeze(2)


def train_many(tasks: list[TrainingTask], training: TrainingSpec, device: torch.device) -> list[float]:
    """Train every task's model for ``training.local_epochs`` epochs on its own rows, all in
    one stacked step per batch (module docstring); return each one's mean loss over its last
    epoch. The models must share one architecture (:func:`p2p_job.model.build_model`) and be
    on ``device``; their Adam optimizers come from :func:`make_optimizer`.

    Activations are laid out (clients, units, rows), so every Linear layer is one
    ``baddbmm`` and BatchNorm sees (client, unit) pairs as its channels."""
    if not tasks:
        return []
    for task in tasks:
        if len(task.X) < 2:
            raise ValueError(f"train_local: need at least 2 training rows, got {len(task.X)}")
    B = training.batch_size
    if B < 2:
        raise ValueError(f"train_local: batchSize must be at least 2 (BatchNorm needs two rows), got {B}")
    blocks = _blocks(tasks[0].model)

    schedules = [_schedule(task, training) for task in tasks]
    order = sorted(range(len(tasks)), key=lambda c: -len(schedules[c]))  # most steps first: active = a prefix
    tasks = [tasks[c] for c in order]
    schedules = [schedules[c] for c in order]
    C, S = len(tasks), len(schedules[0])

    # Rows of all clients in one tensor; per step and client, B row numbers into it (padding:
    # the client's first row, weight 0), the real row count and whether the step is in the
    # client's last epoch (whose loss is reported).
    offsets = np.concatenate([[0], np.cumsum([len(t.X) for t in tasks])]).tolist()
    X_all = torch.as_tensor(np.concatenate([np.asarray(t.X, dtype=np.float32) for t in tasks])).to(device)
    y_all = torch.as_tensor(np.concatenate([np.asarray(t.y, dtype=np.float32) for t in tasks])).to(device)
    index = torch.full((S, C, B), -1, dtype=torch.int64)
    last_epoch = torch.zeros(S, C)
    for c, steps in enumerate(schedules):
        index[: len(steps), c] = steps
        per_epoch = len(steps) // training.local_epochs
        last_epoch[len(steps) - per_epoch : len(steps), c] = 1.0
    real = index >= 0
    rows = real.sum(2)  # (S, C); 0 once a client is done
    active = (rows > 0).sum(1).tolist()
    full = [bool((rows[s, : active[s]] == B).all()) for s in range(S)]
    index = torch.where(real, index + torch.tensor(offsets[:-1]).view(1, C, 1), torch.tensor(offsets[:-1]).view(1, C, 1))
    weights = real.float().unsqueeze(2)  # (S, C, 1, B)
    rows_np = rows.numpy()
    index, weights, rows_f, last_epoch = (t.to(device) for t in (index, weights, rows.float(), last_epoch))

    stack = _Stack(tasks, device)
    step_sizes, bias_corrections2 = stack.bias_corrections([len(steps) for steps in schedules], device)
    loss_weights = rows_f * last_epoch  # the last epoch's loss, weighted by rows
    keep = 1.0 - blocks[0].dropout if blocks else 1.0
    bounds = np.concatenate([[0], np.cumsum([b.units for b in blocks])]).tolist()
    dropout_rngs = [np.random.default_rng(t.seed) for t in tasks]
    uniforms = np.zeros((C, bounds[-1], B), dtype=np.float32)
    loss_sum = torch.zeros(C, device=device)
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    d = X_all.shape[1]
    with warnings.catch_warnings():
        # The stacked parameters are views into one (C, P) buffer and their gradients views into
        # another, so PyTorch accumulates gradients in place there (what the fused Adam step
        # reads); it warns that such strided gradients "do not obey the gradient layout contract".
        warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
        for s in range(S):
            k = active[s]
            params = stack.params(k)
            idx = index[s, :k].reshape(-1)
            h = X_all.index_select(0, idx).view(k, B, d).transpose(1, 2)  # (k, d, B)
            target = y_all.index_select(0, idx).view(k, 1, B)
            w, n = weights[s, :k], rows_f[s, :k].view(k, 1, 1)
            if keep < 1.0:  # per client, (units, rows) uniforms from its own stream; kept below 1 − p
                for c in range(k):
                    m = rows_np[s, c]
                    if m == B:
                        dropout_rngs[c].random(out=uniforms[c].reshape(-1), dtype=np.float32)
                    else:
                        uniforms[c, :, :m] = dropout_rngs[c].random((bounds[-1], m), dtype=np.float32)
                masks = torch.from_numpy(uniforms[:k]).to(device).lt_(keep).mul_(1.0 / keep)  # uniforms become masks
            stack.grad[:k].zero_()
            for j, block in enumerate(blocks):
                weight, bias, gamma, beta = params[4 * j : 4 * j + 4]
                h = torch.baddbmm(bias.unsqueeze(2), weight, h)
                h = _batch_norm(h, gamma, beta, stack.running[0][j][:k], stack.running[1][j][:k], block, w, n, full[s])
                h = torch.nn.functional.leaky_relu(h, block.slope)
                if keep < 1.0:
                    h = h * masks[:, bounds[j] : bounds[j + 1]]
            weight, bias = params[-2:]
            logits = torch.baddbmm(bias.unsqueeze(2), weight, h)  # (k, 1, B)
            per_client = (loss_fn(logits, target) * w).sum((1, 2)) / n.view(k)
            per_client.sum().backward()
            stack.adam_step(k, step_sizes[s, :k], bias_corrections2[s, :k])
            loss_sum[:k].add_(per_client.detach() * loss_weights[s, :k])
    stack.write_back(tasks)

    losses = (loss_sum / loss_weights.sum(0)).tolist()
    by_client = [0.0] * C
    for c, src in enumerate(order):
        by_client[src] = losses[c]
    return by_client


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
