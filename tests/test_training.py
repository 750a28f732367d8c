"""The stacked training engine (p2p_job.training.train_many) against PyTorch's own layers and
optimizer, and against itself one peer at a time.

Stated tolerance: after two rounds of a few hundred Adam steps, every weight, BatchNorm
statistic and Adam moment of a peer trained in a stack agrees with the same peer trained alone
to within 1e-5 absolute (measured: a few 1e-6), and with ``nn.Module`` + ``torch.optim.Adam``
(dropout 0, same batches) to within 1e-4 (measured: about 2e-5). The differences are float
rounding: BatchNorm statistics come from PyTorch's kernel when every client of a step has a
full batch and from weighted sums otherwise, and lerp/fused-Adam order operations differently.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from p2p_job.model import build_model, model_state
from p2p_job.spec import TrainingSpec
from p2p_job.training import TrainingTask, _batches, make_optimizer, train_many

CPU = torch.device("cpu")
STACKED_VS_ALONE = 1e-5
ENGINE_VS_TORCH = 1e-4
SIZES = (300, 257, 190)  # different sizes: different numbers of steps, and short last batches


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n: int, seed: int, d: int = 7) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    y = (g.random(n) < 0.3).astype(np.int8)
    return (0.3 + 0.4 * y[:, None] + 0.1 * g.standard_normal((n, d))).astype(np.float32), y


def _training(dropout: float) -> TrainingSpec:
    return TrainingSpec(hidden_layers=[16, 8], local_epochs=3, batch_size=32, learning_rate=1e-2, dropout=dropout)


def _peers(n: int, training: TrainingSpec, d: int = 7) -> list[tuple[nn.Module, torch.optim.Optimizer]]:
    """n copies of one freshly initialised network, each with its own Adam."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        first = build_model(d, training)
    peers = []
    for _ in range(n):
        model = build_model(d, training)
        model.load_state_dict(first.state_dict())
        peers.append((model, make_optimizer(model, training)))
    return peers


def _everything(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    """Weights, BatchNorm running statistics and Adam state, as arrays."""
    out = {f"model.{k}": v for k, v in model_state(model).items()}
    for i, p in enumerate(model.parameters()):
        for key, value in optimizer.state[p].items():
            out[f"adam.{i}.{key}"] = value.detach().numpy().copy()
    return out


def _max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)


def _rounds(peers, data, training, rounds=(10, 20), stacked=True) -> list[list[float]]:
    """Two rounds of local training (the Adam state carries over), stacked or one at a time."""
    losses = []
    for r in rounds:
        tasks = [TrainingTask(m, o, X, y, r + i) for i, ((m, o), (X, y)) in enumerate(zip(peers, data))]
        losses.append(train_many(tasks, training, CPU) if stacked else [train_many([t], training, CPU)[0] for t in tasks])
    return losses


def _torch_rounds(peers, data, training, rounds=(10, 20)) -> list[list[float]]:
    """The reference: nn.Module in training mode, BCEWithLogitsLoss, torch.optim.Adam, on the
    batches train_many draws (one permutation per epoch from a generator seeded with the task's
    seed). Only comparable with dropout 0 (the engine draws its own masks)."""
    losses = []
    for r in rounds:
        round_losses = []
        for i, ((model, optimizer), (X, y)) in enumerate(zip(peers, data)):
            generator = torch.Generator().manual_seed(r + i)
            X_t, y_t = torch.from_numpy(X), torch.from_numpy(y).float().unsqueeze(1)
            model.train()
            for _ in range(training.local_epochs):
                total, seen = 0.0, 0
                for idx in _batches(len(X), training.batch_size, torch.randperm(len(X), generator=generator)):
                    optimizer.zero_grad()
                    loss = nn.BCEWithLogitsLoss()(model(X_t[idx]), y_t[idx])
                    loss.backward()
                    optimizer.step()
                    total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
            round_losses.append(total / seen)
        losses.append(round_losses)
    return losses


def test_the_engine_matches_pytorch_layers_and_adam_without_dropout():
    training = _training(dropout=0.0)
    data = [_data(n, i) for i, n in enumerate(SIZES)]
    reference, engine = _peers(3, training), _peers(3, training)
    expected = _torch_rounds(reference, data, training)
    got = _rounds(engine, data, training)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for (m_ref, o_ref), (m, o) in zip(reference, engine):
        assert _max_difference(_everything(m, o), _everything(m_ref, o_ref)) < ENGINE_VS_TORCH


def test_a_peer_trained_in_a_stack_equals_the_peer_trained_alone():
    """Dropout, BatchNorm statistics, Adam moments and step counts stay each peer's own, also
    when the peers take different numbers of steps (a finished peer does not move)."""
    training = _training(dropout=0.2)
    data = [_data(n, i) for i, n in enumerate(SIZES)]
    stacked, alone = _peers(3, training), _peers(3, training)
    losses_stacked = _rounds(stacked, data, training, stacked=True)
    losses_alone = _rounds(alone, data, training, stacked=False)
    np.testing.assert_allclose(losses_stacked, losses_alone, rtol=1e-5)
    for (m_s, o_s), (m_a, o_a) in zip(stacked, alone):
        assert _max_difference(_everything(m_s, o_s), _everything(m_a, o_a)) < STACKED_VS_ALONE
    # Each Adam counted its own steps: 3 epochs × batches per epoch, two rounds.
    for (model, optimizer), n in zip(stacked, SIZES):
        per_epoch = len(_batches(n, 32, torch.arange(n)))
        assert {float(s["step"]) for s in optimizer.state.values()} == {2 * 3 * per_epoch}
    # The peers' BatchNorm statistics differ (their data differ).
    means = [model[1].running_mean.numpy() for model, _ in stacked]
    assert not np.allclose(means[0], means[2])


def test_changing_one_peers_data_leaves_the_others_alone():
    training = _training(dropout=0.2)
    data = [_data(n, i) for i, n in enumerate(SIZES)]
    changed = [data[0], _data(420, 99), data[2]]  # another size too: another number of steps
    first, second = _peers(3, training), _peers(3, training)
    _rounds(first, data, training)
    _rounds(second, changed, training)
    after = [_everything(m, o) for m, o in first], [_everything(m, o) for m, o in second]
    assert _max_difference(after[0][0], after[1][0]) < STACKED_VS_ALONE
    assert _max_difference(after[0][2], after[1][2]) < STACKED_VS_ALONE
    assert _max_difference(after[0][1], after[1][1]) > 1e-3  # the changed peer did change


def test_the_same_seeds_give_the_same_bits():
    training = _training(dropout=0.2)
    data = [_data(n, i) for i, n in enumerate(SIZES)]
    a, b = _peers(3, training), _peers(3, training)
    assert _rounds(a, data, training) == _rounds(b, data, training)
    for (m_a, o_a), (m_b, o_b) in zip(a, b):
        assert _max_difference(_everything(m_a, o_a), _everything(m_b, o_b)) == 0.0


def test_column_major_rows_train_exactly_as_row_major_rows():
    """Shards are column-major; train_many copies every caller's rows into one row-major
    array, so the layout (and float64 input) changes nothing: the same bits."""
    training = _training(dropout=0.2)
    data = [_data(n, i) for i, n in enumerate(SIZES)]
    fortran = [(np.asfortranarray(X.astype(np.float64)), y) for X, y in data]
    assert not fortran[0][0].flags["C_CONTIGUOUS"]
    a, b = _peers(3, training), _peers(3, training)
    assert _rounds(a, data, training) == _rounds(b, fortran, training)
    for (m_a, o_a), (m_b, o_b) in zip(a, b):
        assert _max_difference(_everything(m_a, o_a), _everything(m_b, o_b)) == 0.0


def test_batch_size_one_is_refused_and_no_tasks_is_nothing():
    training = TrainingSpec(hidden_layers=[4], batch_size=1)
    (model, optimizer), = _peers(1, training, d=3)
    X, y = _data(10, 0, d=3)
    with pytest.raises(ValueError, match="batchSize must be at least 2"):
        train_many([TrainingTask(model, optimizer, X, y, 0)], training, CPU)
    assert train_many([], training, CPU) == []


def test_set_cpu_threads_limits_pytorch_and_numpys_blas():
    from threadpoolctl import threadpool_info, threadpool_limits

    from p2p_job.training import set_cpu_threads

    with threadpool_limits(limits=None):  # restores numpy's BLAS afterwards
        set_cpu_threads(1)
        assert torch.get_num_threads() == 1
        assert {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"} == {1}


def _reference_gradients(params, h, target, masks, running, training, real_rows):
    """Autograd through PyTorch's own layers, client by client, on each client's real rows:
    Linear, ``F.batch_norm`` in training mode, LeakyReLU, the given dropout masks, a last Linear
    and the mean BCE-with-logits loss. Returns (gradients, losses, running statistics)."""
    leaves = [p.detach().clone().requires_grad_() for p in params]
    losses, stats = [], [[r.clone() for r in layer] for layer in running]
    for c, m in enumerate(real_rows):
        x = h[c, :, :m].T  # (rows, features)
        unit = 0
        for j, units in enumerate(training.hidden_layers):
            weight, bias, gamma, beta = (leaf[c] for leaf in leaves[4 * j : 4 * j + 4])
            z = torch.nn.functional.linear(x, weight, bias)
            x = torch.nn.functional.batch_norm(z, stats[0][j][c], stats[1][j][c], gamma, beta, training=True, momentum=0.1, eps=1e-5)
            x = torch.nn.functional.leaky_relu(x, training.leaky_relu_slope)
            if masks is not None:
                x = x * masks[c, unit : unit + units, :m].T
            unit += units
        logits = torch.nn.functional.linear(x, leaves[-2][c], leaves[-1][c])
        losses.append(torch.nn.functional.binary_cross_entropy_with_logits(logits.view(-1), target[c, 0, :m]))
    grads = torch.autograd.grad(torch.stack(losses).sum(), leaves)
    return grads, torch.stack(losses).detach(), stats


def _column(t: torch.Tensor) -> torch.Tensor:
    """A stacked vector parameter (k, units) as the engine passes it, (k, units, 1)."""
    return t.unsqueeze(2) if t.dim() == 2 else t


@pytest.mark.parametrize("real_rows", [(32, 32, 32), (32, 5, 17)], ids=["full-batches", "short-batches"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_hand_written_backward_equals_autograd(real_rows, dropout):
    """forward_backward's gradients, losses and BatchNorm running statistics against autograd
    through PyTorch's layers, for three stacked clients with random weights (γ, β and the
    statistics too), with and without dropout, with full batches and with short ones padded to
    the batch size. Stated tolerance: 1e-5 relative to each gradient's largest entry
    (float32 rounding; measured at most 1.4e-6)."""
    from p2p_job.training import _blocks, forward_backward

    training = TrainingSpec(hidden_layers=[16, 8, 4], batch_size=32, dropout=dropout, leaky_relu_slope=0.05)
    g = torch.Generator().manual_seed(3)
    k, d, B = 3, 7, 32
    model = build_model(d, training)
    params = [torch.randn(k, *p.shape, generator=g) * 0.5 for p in model.parameters()]
    running = [[torch.rand(k, u, generator=g) for u in training.hidden_layers] for _ in range(2)]
    h = torch.randn(k, d, B, generator=g) * 2 + 1
    target = (torch.rand(k, 1, B, generator=g) < 0.4).float()
    masks = None
    if dropout:
        masks = (torch.rand(k, sum(training.hidden_layers), B, generator=g) >= dropout).float() / (1 - dropout)
    expected, expected_losses, expected_stats = _reference_gradients(params, h, target, masks, running, training, real_rows)

    grads = [torch.full_like(p, float("nan")) for p in params]
    stats = [[r.clone() for r in layer] for layer in running]
    partial = real_rows != (B,) * k
    weights = (torch.arange(B).view(1, 1, B) < torch.tensor(real_rows).view(k, 1, 1)).float() if partial else None
    rows = torch.tensor(real_rows, dtype=torch.float32).view(k, 1, 1) if partial else None
    losses = forward_backward([_column(p) for p in params], [_column(g) for g in grads], h, target, masks, stats,
                              _blocks(model), weights, rows, loss=True)

    np.testing.assert_allclose(losses.numpy(), expected_losses.numpy(), rtol=1e-5)
    largest = max(float(want.abs().max()) for want in expected)
    for i, (name, got, want) in enumerate(zip([n for n, _ in model.named_parameters()], grads, expected)):
        if i % 4 == 1 and i < len(grads) - 2:
            # A Linear bias feeding BatchNorm has gradient 0 (the mean is subtracted): both are rounding.
            assert float(got.abs().max()) <= 1e-6 * largest and float(want.abs().max()) <= 1e-6 * largest, name
            continue
        scale = float(want.abs().max())
        assert scale > 1e-4 * largest, name
        assert float((got - want).abs().max()) <= 1e-5 * scale, name
    for got_layers, want_layers in zip(stats, expected_stats):
        for got, want in zip(got_layers, want_layers):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-7)


def test_dropout_masks_depend_on_seed_and_step_only():
    """Each client's masks come from its own stream in step order: the same made by a background
    thread or in line, in chunks of any size (clients alone or stacked with others that stop
    earlier); the kept share is 1 − p and kept units carry 1 / (1 − p)."""
    from p2p_job.training import _DropoutMasks

    units, B, keep, steps = 6, 5, 0.75, 40
    active = [3] * 25 + [1] * 15  # two clients stop after 25 steps
    stacked = [_DropoutMasks([7, 8, 9], units, B, keep, active, CPU, background) for background in (False, True)]
    alone = _DropoutMasks([8], units, B, keep, [1] * 25, CPU, False)
    try:
        for s in range(steps):
            inline, threaded = stacked[0](s, active[s]), stacked[1](s, active[s])
            assert torch.equal(inline, threaded)
            if s < 25:
                assert torch.equal(inline[1], alone(s, 1)[0])
    finally:
        for masks in (*stacked, alone):
            masks.close()
    many = _DropoutMasks([1], 64, 128, keep, [1] * 50, CPU, False)
    values = torch.stack([many(s, 1) for s in range(50)])
    assert set(values.unique().tolist()) == {0.0, np.float32(1 / keep)}
    assert abs(float((values > 0).float().mean()) - keep) < 0.01  # 409,600 draws: 3 sigma is 0.002
