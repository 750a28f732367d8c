"""Local training and scoring (§5.1.3; Algorithm 2, lines 8–10; equation 4).

Adam with the spec's learning rate and weight decay minimises binary cross-entropy on the
sigmoid of the model's logit for ``localEpochs`` passes over the training set in batches of
``batchSize``.

**One engine for one peer or many.** :func:`train_many` trains any number of models of the
same architecture at once — the peers of one method, or of every method of a simulation — in
one batched forward/backward/optimizer step per batch: every layer's weights are stacked along
a leading client axis (``(C, out, in)``), Linear layers are batched matrix products
(``torch.baddbmm``/``torch.bmm``), BatchNorm takes its statistics per client over that
client's rows only, and Adam is PyTorch's fused kernel over each client's row of a flat
``(C, P)`` buffer that holds every parameter of every client. The forward and backward passes
are written out by hand (:func:`forward_backward`, checked against autograd in
tests/test_training.py): no autograd graph is built, every gradient is written straight into the
flat gradient buffer Adam reads, and LeakyReLU and dropout are one multiplication each way.
Nothing mixes clients: each keeps its own rows, batch order, dropout masks, BatchNorm running
statistics, Adam moments and step count. :func:`train_local` is the same engine for a single
peer (``p2pk worker``, ``p2pk simulate --engine per-peer``), so the loop is written once.

Clients' data sets differ in size, so they take different numbers of steps. Clients are
ordered by their number of steps, most first; at step ``s`` the clients still training are a
prefix of the stack, and the step works on that prefix only (views, no copies), so a finished
client's weights, Adam state and statistics do not move. A client whose batch is shorter (the
last of an epoch) is padded to ``batchSize`` rows with weight 0: its BatchNorm statistics,
loss and gradients are taken over its real rows only (row weights), so the padding changes
nothing.

Determinism: everything random is keyed by the task's ``seed``: the batch order (a
``torch.Generator``: one permutation per epoch, batches are slices of it) and the dropout masks
(:class:`_DropoutMasks`: a PCG64 stream, 32 random bits per unit and row). The masks are drawn
on the CPU whatever the device, so CPU and CUDA use the same ones. A client's numbers do not
depend on the other clients in the stack; on the CPU, training a peer alone or in any stack
agrees to float rounding (tests/test_training.py states the tolerance). The process-wide
random state is not touched.

**Scoring** (:func:`predict_scores`) runs the ``nn.Module`` in evaluation mode.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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
    ``model.parameters()`` order); ``grad``, ``exp_avg`` and ``exp_avg_sq`` have its shape and
    ``step`` (C,) counts each client's Adam steps. ``views(buffer, k)`` gives the first k
    clients' parameters of one of them, shaped (k, *shape): views, so a gradient written there
    is where Adam reads it. BatchNorm running statistics are (C, units) per layer."""

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
            step = np.zeros(C, dtype=np.float32)
            for c, task in enumerate(tasks):
                for i, p in enumerate(task.model.parameters()):
                    state = task.optimizer.state.get(p)
                    if state:
                        lo, hi = self.offsets[i], self.offsets[i + 1]
                        self.exp_avg[c, lo:hi] = state["exp_avg"].reshape(-1)
                        self.exp_avg_sq[c, lo:hi] = state["exp_avg_sq"].reshape(-1)
                        step[c] = float(state["step"])
            self.step = torch.from_numpy(step).to(device)
        self.grad = torch.zeros_like(self.flat)
        group = tasks[0].optimizer.param_groups[0]
        self.lr, self.weight_decay, (self.beta1, self.beta2), self.eps = group["lr"], group["weight_decay"], group["betas"], group["eps"]
        self._views: dict[tuple[int, int], list[torch.Tensor]] = {}
        self._running_views: dict[int, list[list[torch.Tensor]]] = {}
        self._rows: dict[int, list[list[torch.Tensor]]] = {}

    def views(self, buffer: torch.Tensor, k: int) -> list[torch.Tensor]:
        """The first k clients' parameters in ``buffer`` (``flat`` or ``grad``), (k, *shape)
        each, a vector shape as a column (k, units, 1), as :func:`forward_backward` takes them."""
        key = (id(buffer), k)
        if key not in self._views:
            self._views[key] = [buffer[:k, lo:hi].view(k, *shape, *((1,) if len(shape) == 1 else ()))
                                for lo, hi, shape in zip(self.offsets, self.offsets[1:], self.shapes)]
        return self._views[key]

    def running_views(self, k: int) -> list[list[torch.Tensor]]:
        """The first k clients' BatchNorm running means and variances, (k, units) per layer."""
        if k not in self._running_views:
            self._running_views[k] = [[r[:k] for r in stats] for stats in self.running]
        return self._running_views[k]

    @torch.no_grad()
    def adam_step(self, k: int) -> None:
        """One Adam step for each of the first k clients (PyTorch's Adam, L2 weight decay added to
        the gradient), each with its own step count and so its own bias corrections: PyTorch's
        fused Adam kernel, with every client's whole parameter row as one of its tensors."""
        if k not in self._rows:
            self._rows[k] = [list(t[:k].unbind(0)) for t in (self.flat, self.grad, self.exp_avg, self.exp_avg_sq, self.step)]
        params, grads, exp_avg, exp_avg_sq, steps = self._rows[k]
        self.step[:k].add_(1)
        torch._fused_adam_(params, grads, exp_avg, exp_avg_sq, [], steps, lr=self.lr, beta1=self.beta1, beta2=self.beta2,
                           weight_decay=self.weight_decay, eps=self.eps, amsgrad=False, maximize=False)

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


class _DropoutMasks:
    """Every client's dropout masks from its own stream: a PCG64 generator seeded with the
    task's seed. Per step a client draws ``Σ hidden units × batchSize`` 32-bit integers (two per
    64-bit output, in order) and keeps a unit of a row where its integer is below
    ``round((1 − p)·2³²)`` — keep probability 1 − p to within 2⁻³² — scaled by 1 / (1 − p) as
    ``nn.Dropout`` does. Rows of a short last batch draw too (their masks are not used). Masks
    are made ``chunk`` steps at a time for all clients, so a client's masks depend on its seed
    and step only, never on the stack it trains in.

    ``background``: the next chunk is made by a second thread while the current one is used
    (numpy releases the GIL), so on two cores the masks cost the training loop nothing; the
    streams are still drawn in order, one chunk after the other."""

    def __init__(self, seeds: list[int], units: int, batch_size: int, keep: float, active: list[int],
                 device: torch.device, background: bool):
        self.generators = [np.random.default_rng(seed) for seed in seeds]
        self.threshold = np.uint32(min(round(keep * 2.0**32), 2**32 - 1))
        self.scale = np.float32(1.0 / keep)
        self.shape = (units, batch_size)
        self.raw_per_step = (units * batch_size + 1) // 2  # 64-bit outputs per step: whole ones
        self.chunk = int(max(1, min(64, len(active), (1 << 23) // (len(seeds) * units * batch_size))))
        self.active, self.device = active, device
        shape = (self.chunk, len(seeds), units, batch_size)
        self.buffers = [(np.empty(shape, dtype=bool), np.empty(shape, dtype=np.float32)) for _ in range(2)]
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="dropout-masks") if background else None
        self.current, self.masks, self.following = -1, None, None

    def _make(self, i: int) -> torch.Tensor:
        """Chunk i's masks (steps i·chunk …), for the clients active at its first step."""
        kept, values = self.buffers[i % 2]
        k, words = self.active[i * self.chunk], self.shape[0] * self.shape[1]
        for c in range(k):  # clients beyond k are done for the rest of the training
            drawn = self.generators[c].bit_generator.random_raw(self.chunk * self.raw_per_step).view(np.uint32)
            drawn = drawn.reshape(self.chunk, 2 * self.raw_per_step)[:, :words].reshape(self.chunk, *self.shape)
            np.less(drawn, self.threshold, out=kept[:, c])
        np.multiply(kept[:, :k], self.scale, out=values[:, :k])
        return torch.from_numpy(values).to(self.device)

    def __call__(self, s: int, k: int) -> torch.Tensor:
        """Step s's masks of the first k clients (the clients active at step s), (k, units, B)."""
        i = s // self.chunk
        if i != self.current:
            self.masks = self.following.result() if self.following is not None else self._make(i)
            self.current = i
            more = (i + 1) * self.chunk < len(self.active)
            self.following = self.pool.submit(self._make, i + 1) if self.pool is not None and more else None
        return self.masks[s - i * self.chunk, :k]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def forward_backward(params: list[torch.Tensor], grads: list[torch.Tensor], h: torch.Tensor, target: torch.Tensor,
                     masks: torch.Tensor | None, running: list[list[torch.Tensor]], blocks: list["_Hidden"],
                     weights: torch.Tensor | None = None, rows: torch.Tensor | None = None,
                     loss: bool = False) -> torch.Tensor | None:
    """One training step's forward and backward pass of k stacked §5.1.3 networks, written out
    by hand (no autograd graph): the gradient of each client's mean binary cross-entropy over its
    own rows with respect to its own parameters is written into ``grads`` (views shaped like
    ``params``: (k, out, in) weights; biases and BatchNorm γ, β as (k, units, 1) columns).

    ``h`` (k, n_features, B): each client's input rows as columns; ``target`` (k, 1, B);
    ``masks`` (k, Σ units, B) dropout masks (0 or 1 / (1 − p)), or None without dropout;
    ``running`` the BatchNorm running means and variances, (k, units) per layer, updated in
    place as ``nn.BatchNorm1d`` does in training mode. ``weights`` (k, 1, B) and ``rows``
    (k, 1, 1): when some client has fewer than B real rows, 1 on real rows and 0 on padding and
    each client's real row count; the padding then changes nothing (statistics, loss and
    gradients are over real rows). Returns each client's mean loss (k,) when ``loss``.

    Per hidden layer, BatchNorm in training mode over a client's rows: μ = Σz / n,
    c = z − μ, σ² = Σc² / n (biased), r = 1 / √(σ² + ε), y = γ·r·c + β; then a = LeakyReLU(y) and
    dropout. Backward: with s₁ = Σ ∂y, s₂ = Σ ∂y·c: ∂γ = r·s₂, ∂β = s₁ and
    ∂z = γ·r·(∂y − s₁/n − c·r²·s₂/n) (the usual BatchNorm gradient, with x̂ = r·c)."""
    k, _, B = h.shape
    partial = weights is not None
    n = rows if partial else B
    saved = []
    unit = 0
    for j, block in enumerate(blocks):
        weight, bias, gamma, beta = params[4 * j : 4 * j + 4]
        z = torch.baddbmm(bias, weight, h)
        if partial:
            mean = (z * weights).sum(2, keepdim=True).div_(n)
            c = z.sub_(mean).mul_(weights)
        else:
            mean = z.mean(2, keepdim=True)
            c = z.sub_(mean)
        var = torch.linalg.vector_norm(c, dim=2, keepdim=True).square_().div_(n)  # biased, as BatchNorm normalises
        m = block.momentum  # the running variance is the unbiased one, as BatchNorm keeps it
        running[0][j].lerp_(mean.view(k, -1), m)
        if partial:
            running[1][j].lerp_((var * (n / (n - 1))).view(k, -1), m)
        else:
            running[1][j].mul_(1 - m).add_(var.view(k, -1), alpha=m * B / (B - 1))
        rstd = var.add_(block.eps).rsqrt_()
        scale = rstd * gamma
        y = torch.mul(c, scale).add_(beta)
        if masks is None:
            gate = None
            a = torch.nn.functional.leaky_relu(y, block.slope)
        else:
            gate = torch.ops.aten.leaky_relu_backward(masks[:, unit : unit + block.units], y, block.slope, False)
            a = y.mul_(gate)  # y is not needed again: ∂a/∂y is in the gate
        saved.append((h, c, rstd, scale, y if gate is None else None, gate))
        h = a
        unit += block.units
    weight, bias = params[-2:]
    logits = torch.baddbmm(bias, weight, h)
    per_client = None
    if loss:
        elementwise = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        per_client = (elementwise * weights if partial else elementwise).sum((1, 2)).div_(n.view(k) if partial else B)
    g = torch.sigmoid(logits).sub_(target)  # ∂ mean loss / ∂ logit
    g = g.mul_(weights).div_(n) if partial else g.div_(B)
    torch.bmm(g, h.transpose(1, 2), out=grads[-2])
    torch.sum(g, 2, keepdim=True, out=grads[-1])
    dh = torch.bmm(weight.transpose(1, 2), g)
    for j in reversed(range(len(blocks))):
        block = blocks[j]
        h_in, c, rstd, scale, y, gate = saved[j]
        dy = torch.ops.aten.leaky_relu_backward(dh, y, block.slope, False) if gate is None else dh.mul_(gate)
        s1 = torch.sum(dy, 2, keepdim=True, out=grads[4 * j + 3])  # ∂β
        s2 = (dy * c).sum(2, keepdim=True)
        torch.mul(s2, rstd, out=grads[4 * j + 2])  # ∂γ
        dz = torch.mul(c, (rstd * rstd).mul_(s2).mul_(scale).div_(-n)).add_(torch.mul(s1, scale).div_(-n)).addcmul_(dy, scale)
        if partial:
            dz.mul_(weights)
        torch.bmm(dz, h_in.transpose(1, 2), out=grads[4 * j])
        torch.sum(dz, 2, keepdim=True, out=grads[4 * j + 1])
        if j:
            dh = torch.bmm(params[4 * j].transpose(1, 2), dz)
    return per_client


@torch.no_grad()
def train_many(tasks: list[TrainingTask], training: TrainingSpec, device: torch.device) -> list[float]:
    """Train every task's model for ``training.local_epochs`` epochs on its own rows, all in
    one stacked step per batch (module docstring); return each one's mean loss over its last
    epoch. The models must share one architecture (:func:`p2p_job.model.build_model`) and be
    on ``device``; their Adam optimizers come from :func:`make_optimizer`.

    Activations are laid out (clients, units, rows), so every Linear layer is one
    ``baddbmm`` and BatchNorm reduces over the last, contiguous axis (:func:`forward_backward`)."""
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
    # client's last epoch (whose loss is reported). The rows are stored row-major whatever the
    # callers' layout (shards are column-major): a gathered row is then one contiguous read,
    # not one cache miss per feature (10× the gather's time at 27 clients).
    offsets = np.concatenate([[0], np.cumsum([len(t.X) for t in tasks])]).tolist()
    X_all = np.empty((offsets[-1], tasks[0].X.shape[1]), dtype=np.float32, order="C")
    np.concatenate([np.asarray(t.X) for t in tasks], out=X_all)
    X_all = torch.from_numpy(X_all).to(device)
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
    reported = (last_epoch.sum(1) > 0).tolist()
    index = torch.where(real, index + torch.tensor(offsets[:-1]).view(1, C, 1), torch.tensor(offsets[:-1]).view(1, C, 1))
    weights = real.float().unsqueeze(2)  # (S, C, 1, B)
    index = index.view(S, C * B)  # per step, the active clients' row numbers are a prefix
    index, weights, rows_f, last_epoch = (t.to(device) for t in (index, weights, rows.float(), last_epoch))

    stack = _Stack(tasks, device)
    loss_weights = rows_f * last_epoch  # the last epoch's loss, weighted by rows
    units = sum(b.units for b in blocks)
    keep = 1.0 - blocks[0].dropout if blocks else 1.0
    background = device.type != "cpu" or torch.get_num_threads() > 1  # a core to spare for the masks
    masks = _DropoutMasks([t.seed for t in tasks], units, B, keep, active, device, background) if keep < 1.0 else None
    loss_sum = torch.zeros(C, device=device)
    d = X_all.shape[1]
    inputs = torch.empty(C * B, d, device=device)
    try:
        with torch.inference_mode():  # the steps' temporaries need no autograd bookkeeping
            for s in range(S):
                k = active[s]
                idx = index[s, : k * B]
                h = torch.index_select(X_all, 0, idx, out=inputs[: k * B]).view(k, B, d).transpose(1, 2)  # (k, d, B)
                target = y_all.index_select(0, idx).view(k, 1, B)
                per_client = forward_backward(
                    stack.views(stack.flat, k), stack.views(stack.grad, k), h, target, None if masks is None else masks(s, k),
                    stack.running_views(k), blocks,
                    None if full[s] else weights[s, :k], None if full[s] else rows_f[s, :k].view(k, 1, 1), loss=reported[s],
                )
                stack.adam_step(k)
                if per_client is not None:
                    loss_sum[:k].add_(per_client * loss_weights[s, :k])
    finally:
        if masks is not None:
            masks.close()
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
