"""Phases: boundaries, loss weights and per-group learning rates as functions of the step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dssim_mae_jax import training
from dssim_mae_jax.training._schedules import learning_rate_schedules, param_labels, phase_index


def _config(**kw):
    return training.Config(steps=100, **kw).validate()


def test_boundaries_and_phase_index():
    c = _config()
    assert c.phase_boundaries == (0, 30)
    idx = jax.jit(lambda s: phase_index(s, (0, 30)))
    assert [int(idx(s)) for s in (0, 29, 30, 99)] == [0, 0, 1, 1]


def test_loss_weights_follow_phases_with_preset_fallback():
    c = _config()
    _, rates = training.make_optimizer(c)
    at = jax.jit(training.make_schedule(c, rates, {"ssim": 0.8, "mae": 0.2}))
    np.testing.assert_allclose([float(at(0)["w_ssim"]), float(at(0)["w_mae"])], [0.0, 1.0])
    np.testing.assert_allclose([float(at(30)["w_ssim"]), float(at(30)["w_mae"])], [0.8, 0.2])
    assert [int(at(s)["phase"]) for s in (0, 29, 30)] == [0, 0, 1]
    np.testing.assert_allclose(float(at(40)["lr_head"]), float(rates["head"](40)))


def test_learning_rates_per_group_warmup_cosine_and_frozen():
    phases = [
        {"name": "a", "fraction": 0.5, "learning_rates": {"body": 1e-3, "head": 2e-3},
         "frozen": ["body"]},
        {"name": "b", "fraction": 0.5, "learning_rates": {"body": 1e-4, "head": 1e-3}},
    ]  # fmt: skip
    c = _config(phases=phases, warmup_fraction=0.1, final_lr_fraction=0.1)
    s = learning_rate_schedules(c)
    assert float(s["body"](10)) == 0.0  # frozen in phase a
    assert float(s["head"](0)) == 0.0  # warm-up starts at 0
    np.testing.assert_allclose(float(s["head"](5)), 2e-3, rtol=1e-6)  # peak after warm-up
    np.testing.assert_allclose(float(s["head"](49)), 2e-4, rtol=0.05)  # decayed to 10%
    np.testing.assert_allclose(float(s["body"](55)), 1e-4, rtol=1e-6)
    assert float(s["head"](55)) > float(s["body"](55))


def _params():
    return {
        "body": {"0": {"kernel": jnp.ones((3,)), "bias": jnp.ones((2,))}},
        "head": {"kernel": jnp.ones((4,))},
    }


def test_labels_and_multi_transform_frozen_group_gets_zero_updates():
    p = _params()
    labels = param_labels(p)
    assert labels["body"]["0"]["kernel"] == "body" and labels["head"]["kernel"] == "head"
    c = _config(phases=[{"name": "a", "fraction": 1.0, "frozen": ["body"]}], grad_clip_norm=0.0)
    tx, _ = training.make_optimizer(c)
    state = tx.init(p)
    grads = jax.tree.map(jnp.ones_like, p)
    for _ in range(3):
        updates, state = tx.update(grads, state, p)
    assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates["body"]))
    assert float(jnp.abs(updates["head"]["kernel"]).max()) > 0.0


def test_label_outside_groups_is_an_error():
    with pytest.raises(ValueError, match="in no group"):
        param_labels({"tail": jnp.ones(2)})


def test_optimizer_is_a_gradient_transformation():
    tx, _ = training.make_optimizer(_config())
    assert isinstance(tx, optax.GradientTransformation)
