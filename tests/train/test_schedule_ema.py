"""The learning-rate schedule and the weight average against independent references."""

import numpy as np
import pytest
import torch

from ehpc.train.ema import ExponentialMovingAverage
from ehpc.train.schedule import LRSchedule

LR, LR_MIN, EPOCHS = 1.0e-2, 1.0e-4, 12


def optimizer():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)


def test_cosine_at_epoch_boundaries_is_torchs_cosine_annealing():
    reference = optimizer()
    torch_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(reference, EPOCHS, LR_MIN)
    ours = LRSchedule(optimizer(), LR, "cosine", EPOCHS, lr_min=LR_MIN)
    for epoch in range(EPOCHS + 1):
        assert ours.rate(step=10_000, progress=epoch) == pytest.approx(
            reference.param_groups[0]["lr"], rel=1e-12)
        reference.step()
        torch_schedule.step()


def test_warmup_is_linear_then_hands_over():
    ours = LRSchedule(optimizer(), LR, "constant", EPOCHS, warmup_steps=4)
    assert [ours.rate(k, 0.0) for k in range(6)] == pytest.approx(
        [LR / 4, LR / 2, 3 * LR / 4, LR, LR, LR])


def test_plateau_cuts_like_torchs_reduce_on_plateau():
    losses = [5.0, 4.0, 4.5, 4.2, 4.1, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0]
    reference = optimizer()
    torch_schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
        reference, factor=0.5, patience=2, threshold=0.0, min_lr=LR_MIN)
    ours = LRSchedule(optimizer(), LR, "plateau", EPOCHS, lr_min=LR_MIN, plateau_factor=0.5,
                      plateau_patience=2)
    for loss in losses:
        ours.report(loss)
        torch_schedule.step(loss)
        assert ours.rate(100, 0.0) == pytest.approx(reference.param_groups[0]["lr"], rel=1e-12)
    assert ours.rate(100, 0.0) < LR  # it did cut


def test_ema_follows_the_warmed_up_recursion():
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    ema = ExponentialMovingAverage(module, decay=0.9)
    expected = module.weight.detach().numpy().copy()
    for n in range(1, 30):
        with torch.no_grad():
            module.weight.add_(torch.randn_like(module.weight))
        ema.update(module)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * module.weight.detach().numpy()
    np.testing.assert_allclose(ema.shadow["weight"].numpy(), expected, rtol=1e-6)
    copy = torch.nn.Linear(3, 2)
    ema.copy_to(copy)
    np.testing.assert_allclose(copy.weight.detach().numpy(), expected, rtol=1e-6)
