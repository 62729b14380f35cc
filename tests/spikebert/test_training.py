"""spikebert.training helpers that the recipes' exact resume relies on."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from spikebert.training import make_optimizer, rng_neutral_start


def test_loader_start_leaves_the_global_rng_alone():
    loader = DataLoader(list(range(10)), batch_size=4)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(loader)  # a plain DataLoader draws its base seed from the global RNG
    assert not torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(0)
    batches = [b.tolist() for b in rng_neutral_start(loader)]
    assert torch.equal(torch.get_rng_state(), before)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(rng_neutral_start(DataLoader([]))) == []


@pytest.mark.parametrize("schedule, lr_at_end", [("linear", 0.0), ("constant_with_warmup", 1e-3)])
def test_make_optimizer_warms_up_then_follows_the_schedule(schedule, lr_at_end):
    from types import SimpleNamespace

    args = SimpleNamespace(lr=1e-3, weight_decay=0.01, warmup_ratio=0.2, max_steps=10,
                           lr_scheduler=schedule)
    optimizer, scheduler = make_optimizer(torch.nn.Linear(2, 2), args)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    lrs = []
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)  # 2 warm-up steps
    assert lrs[-1] == pytest.approx(lr_at_end)
