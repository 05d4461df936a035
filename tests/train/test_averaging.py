"""Weight averaging: the model a run returns holds the exponential moving average of its weights
after each optimiser step, and a resumed run keeps averaging where the interrupted one stopped."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

SCRIPT = Path(__file__).with_name("resume_script.py")
_spec = importlib.util.spec_from_file_location("resume_script", SCRIPT)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

DECAY = 0.5


def _assert_same(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    for name, value in expected.items():
        np.testing.assert_allclose(state[name].detach().numpy(), value.numpy(), rtol=1e-5, atol=1e-7,
                                   err_msg=name)


def test_returned_weights_are_the_moving_average_of_every_step():
    model = script.make_model()
    steps: list[dict[str, torch.Tensor]] = []

    def record(optimizer, args, kwargs):
        steps.append({n: p.detach().clone() for n, p in model.module.named_parameters()})

    handle = register_optimizer_step_post_hook(record)
    try:
        script.train(model, None, max_epochs=1, weight_averaging=DECAY)
    finally:
        handle.remove()
    assert len(steps) > 1
    average = dict(steps[0])
    for weights in steps[1:]:
        average = {n: DECAY * average[n] + (1 - DECAY) * weights[n] for n in average}
    _assert_same(dict(model.module.named_parameters()), average)
    last = dict(model.module.named_parameters())
    assert any(not torch.equal(last[n].detach(), steps[-1][n]) for n in last)  # not the last step


def test_resumed_run_ends_as_the_uninterrupted_run(tmp_path):
    uninterrupted = script.make_model()
    script.train(uninterrupted, tmp_path / "whole", max_epochs=3, weight_averaging=DECAY)
    resumed = script.make_model()
    script.train(resumed, tmp_path / "parts", max_epochs=2, weight_averaging=DECAY)
    script.train(resumed, tmp_path / "parts", resume=True, max_epochs=3, weight_averaging=DECAY)
    _assert_same(resumed.module.state_dict(), uninterrupted.module.state_dict())
