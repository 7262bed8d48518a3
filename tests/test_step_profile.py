"""benchmarks/step_profile.py: every part of a step is timed, and the step is left as it was."""

from __future__ import annotations

import benchmark_scripts
import pytest

from lenet5x.backend import resolve


@pytest.mark.parametrize("architecture", ["classic", "modern"])
def test_profile_names_every_part_of_a_step(architecture):
    module = benchmark_scripts.load_script("step_profile")
    backend = resolve("numpy", "float32")
    result = module.profile(architecture, backend, batch=4, steps=2)
    _, model, _, _ = module.make_step(architecture, backend, 4)
    expected = {f"{name} {p}" for name, _ in model.layers for p in ("forward", "backward")}
    expected |= {"criterion", "optimizer", "gather"}
    assert set(result["parts"]) == expected
    assert result["step"] > 0 and all(s > 0 for s in result["parts"].values())
    text = module.table(architecture, result, top=3)
    assert f"the other {len(expected) - 3} parts" in text


def test_part_timer_puts_every_method_back():
    module = benchmark_scripts.load_script("step_profile")
    backend = resolve("numpy", "float32")
    _, model, optimizer, data = module.make_step("modern", backend, 4)
    loss, step = model.loss, optimizer.step
    timer = module.PartTimer(backend.synchronize)
    timer.wrap(optimizer, "step", "optimizer")
    timer.wrap_object(model, "loss", "criterion")
    assert model.loss is not loss and model.loss.predict == loss.predict
    timer.unwrap()
    assert model.loss is loss and optimizer.step == step and "step" not in vars(optimizer)
