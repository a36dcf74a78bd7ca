"""Phases as optax pieces: boundaries, loss weights, per-group learning rates, the optimizer.

Reference learning rates are computed here from the formulas (linear warm-up, then
``peak * (f + (1 - f) * (1 + cos(pi * t / T)) / 2)``, optax's cosine decay), not from optax.
"""

import functools
import math
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import dssim_mae_jax as dmj
from dssim_mae_jax import training
from dssim_mae_jax.training import Phase
from dssim_mae_jax.training._schedules import phase_index

DOCS = pathlib.Path(__file__).parent.parent / "docs" / "training.md"


def _config(**kw):
    return training.Config(steps=100, **kw).validate()


def _reference_lr(t, *, peak, start, steps, warmup, final):
    """Warm-up from 0 over `warmup` steps, cosine from `peak` to `final * peak` at `steps`."""
    t = t - start
    if t < warmup:
        return peak * t / warmup
    frac = min((t - warmup) / (steps - warmup), 1.0)
    return peak * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * frac)))


def test_boundaries_and_phase_index():
    c = _config()
    assert c.phase_boundaries == (0, 60)
    assert training.phase_boundaries(c.phases, 100) == (0, 60)
    idx = jax.jit(lambda s: phase_index(s, (0, 60)))
    assert [int(idx(s)) for s in (0, 59, 60, 99, 10_000)] == [0, 0, 1, 1, 1]


def test_loss_weights_follow_phases_with_preset_fallback():
    c = _config()
    _, rates = training.optimizer_from_config(c)
    defaults = {"structural_weight": 0.8, "mae_weight": 0.2}
    at = jax.jit(training.schedule_from_config(c, rates, defaults))
    np.testing.assert_allclose(
        [float(at(0)["structural_weight"]), float(at(0)["mae_weight"])], [0.0, 1.0]
    )
    np.testing.assert_allclose(
        [float(at(60)["structural_weight"]), float(at(60)["mae_weight"])], [0.8, 0.2]
    )
    assert [int(at(s)["phase"]) for s in (0, 59, 60)] == [0, 0, 1]
    np.testing.assert_allclose(float(at(70)["lr_head"]), float(rates["head"](70)))


def test_loss_weights_are_traced_values_no_retrace():
    phases = [
        Phase("mae", 0.3, structural_weight=0.0, mae_weight=1.0, learning_rates={"g": 1.0}),
        Phase("mix", 0.7, structural_weight=0.5, mae_weight=0.5, learning_rates={"g": 1.0}),
    ]
    at = training.loss_weight_schedule(
        phases, total_steps=100, defaults={"structural_weight": 0.8, "mae_weight": 0.2}
    )
    traces = []

    @jax.jit
    def weighted(step, a, b):
        traces.append(1)
        w = at(step)
        return w["structural_weight"] * a + w["mae_weight"] * b

    got = [float(weighted(jnp.int32(s), 2.0, 3.0)) for s in (0, 29, 30, 99, 500)]
    assert got == [3.0, 3.0, 2.5, 2.5, 2.5] and len(traces) == 1
    with pytest.raises(ValueError, match="defaults"):
        training.loss_weight_schedule(phases, total_steps=10, defaults={"mae_weight": 1.0})


def test_mean_weight_follows_phases_and_reaches_the_loss_without_retrace():
    phases = [
        Phase("mae", 0.3, structural_weight=0.0, mae_weight=1.0, mean_weight=0.0,
              learning_rates={"g": 1.0}),
        Phase("mix", 0.5, learning_rates={"g": 1.0}),
        Phase("strong", 0.2, mean_weight=4.0, learning_rates={"g": 1.0}),
    ]  # fmt: skip
    defaults = {"structural_weight": 0.2, "mae_weight": 0.8, "mean_weight": 1.0}
    at = training.loss_weight_schedule(phases, total_steps=10, defaults=defaults)
    assert [float(at(s)["mean_weight"]) for s in (0, 2, 3, 7, 8, 50)] == [0, 0, 1, 1, 4, 4]
    # Left out of `defaults`, the mean term stays off (the loss's own default).
    off = training.loss_weight_schedule(
        phases[:2], total_steps=10, defaults={"structural_weight": 0.8, "mae_weight": 0.2}
    )
    assert float(off(5)["mean_weight"]) == 0.0
    # Through the loss: the schedule's weight is the loss's weights["mean"], traced.
    loss_fn = dmj.make_loss("dssim-mae-mean")
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.uniform(size=(2, 16, 16, 3)), jnp.float32)
    x = jnp.clip(y + 0.05, 0.0, 1.0)
    _, aux = loss_fn(x, y)
    traces = []

    @jax.jit
    def loss_at(step):
        traces.append(1)
        w = at(step)
        weights = training._steps.to_loss_weights(
            w["structural_weight"], w["mae_weight"], mean_weight=w["mean_weight"]
        )
        return loss_fn(x, y, weights=weights)[0]

    for step, (w_s, w_m, w_r) in ((0, (0, 1, 0)), (5, (0.2, 0.8, 1)), (9, (0.2, 0.8, 4))):
        # (float32: the loss in two compiled programs differs by a few ulps.)
        expected = w_s * aux["structural"] + w_m * aux["mae"] + w_r * aux["mean"]
        np.testing.assert_allclose(loss_at(jnp.int32(step)), expected, rtol=1e-5)
    assert len(traces) == 1
    assert training._steps.preset_weights(loss_fn.config) == defaults


def test_per_phase_learning_rates_warmup_cosine_and_frozen():
    phases = [
        {"name": "a", "fraction": 0.5, "learning_rates": {"body": 1e-3, "head": 2e-3},
         "frozen": ["body"]},
        {"name": "b", "fraction": 0.5, "learning_rates": {"body": 1e-4, "head": 1e-3}},
    ]  # fmt: skip
    c = _config(phases=phases, warmup_fraction=0.1, final_lr_fraction=0.1)
    _, s = training.optimizer_from_config(c)
    assert c.lr_schedule == "per_phase"  # train.py's default, as before
    assert float(s["body"](10)) == 0.0  # frozen in phase a
    for t in (0, 3, 5, 20, 49):
        ref = _reference_lr(t, peak=2e-3, start=0, steps=50, warmup=5, final=0.1)
        np.testing.assert_allclose(float(s["head"](t)), ref, rtol=1e-5, atol=1e-12)
    for t in (50, 52, 55, 80, 99, 150):  # warm-up again in phase b; constant past the end
        ref = _reference_lr(t, peak=1e-3, start=50, steps=50, warmup=5, final=0.1)
        np.testing.assert_allclose(float(s["head"](t)), ref, rtol=1e-5, atol=1e-12)
    assert float(s["head"](50)) == 0.0


def test_per_run_schedule_warms_up_once_and_does_not_restart_at_a_switch():
    phases = [
        Phase("mae", 0.3, learning_rates={"enc": 2e-3, "dec": 2e-3}),
        Phase("mix", 0.7, learning_rates={"enc": 5e-4, "dec": 1e-3}),
    ]
    s = training.learning_rate_schedules(
        phases, total_steps=100, warmup_fraction=0.1, final_lr_fraction=0.1
    )
    for t in (0, 5, 10, 29, 30, 31, 60, 99, 200):
        peak = (2e-3 if t < 30 else 5e-4, 2e-3 if t < 30 else 1e-3)
        for g, p in zip(("enc", "dec"), peak, strict=True):
            ref = _reference_lr(t, peak=p, start=0, steps=100, warmup=10, final=0.1)
            np.testing.assert_allclose(float(s[g](t)), ref, rtol=1e-5, atol=1e-12)
    assert float(s["dec"](30)) > 0.5e-3  # the switch changes the peak only
    with pytest.raises(ValueError, match="lr_schedule"):
        training.learning_rate_schedules(phases, total_steps=10, lr_schedule="cosine")


def _plain_params():
    return {
        "body": {"0": {"kernel": jnp.ones((3,)), "bias": jnp.ones((2,))}},
        "head": {"kernel": jnp.ones((4,))},
    }


def test_plain_pytree_group_frozen_in_every_phase_gets_set_to_zero():
    p = _plain_params()
    labels = training.label_params([(r"body/.*", "body"), (r"head/.*", "head")])
    assert labels(p)["body"]["0"]["kernel"] == "body" and labels(p)["head"]["kernel"] == "head"
    phases = [Phase("a", 1.0, learning_rates={"head": 1e-3}, frozen=("body",))]
    tx = training.phased_optimizer(phases, param_labels=labels, total_steps=10)
    assert isinstance(tx, optax.GradientTransformation)
    state = tx.init(p)
    grads = jax.tree.map(jnp.ones_like, p)
    for _ in range(3):
        updates, state = tx.update(grads, state, p)
    assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates["body"]))
    assert float(jnp.abs(updates["head"]["kernel"]).max()) > 0.0
    # optax.set_to_zero for the frozen group: AdamW moments (mu, nu) exist for the head only.
    moments = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert sum(x.size for x in moments) == 2 * p["head"]["kernel"].size


def test_train_py_optimizer_is_the_phased_optimizer():
    c = _config(phases=[{"name": "a", "fraction": 1.0, "frozen": ["body"]}], grad_clip_norm=0.0)
    tx, rates = training.optimizer_from_config(c)
    p = _plain_params()
    ref = training.phased_optimizer(
        [Phase("a", 1.0, learning_rates={"body": 1e-3, "head": 1e-3}, frozen=("body",))],
        param_labels=training.label_params([("body(/.*)?", "body"), ("head(/.*)?", "head")]),
        total_steps=100,
        optimizer=functools.partial(optax.adamw, weight_decay=0.0),
        lr_schedule="per_phase",
    )
    grads = jax.tree.map(lambda x: jnp.arange(x.size, dtype=x.dtype) + 1.0, p)
    s, r = tx.init(p), ref.init(p)
    for _ in range(8):
        u, s = tx.update(grads, s, p)
        v, r = ref.update(grads, r, p)
        jax.tree.map(np.testing.assert_array_equal, u, v)
    np.testing.assert_allclose(float(rates["head"](0)), 0.0)  # `learning_rate` 1e-3, warmed up


def test_bad_labels_and_phases_are_errors():
    with pytest.raises(ValueError, match=r"'tail' matches no rule"):
        training.label_params([(r"body/.*", "body")])({"tail": jnp.ones(2)})
    with pytest.raises(TypeError, match="rules"):
        training.label_params(["body"])
    phases = [Phase("a", 1.0, learning_rates={"enc": 1e-3})]
    tx = training.phased_optimizer(phases, param_labels={"enc": "enc", "x": "x"}, total_steps=5)
    with pytest.raises(ValueError, match=r"group\(s\) \['x'\] are in no phase"):
        tx.init({"enc": jnp.ones(2), "x": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"phases\[0\] \('a'\).learning_rates: not set"):
        training.phased_optimizer([Phase("a", 1.0)], param_labels=lambda p: p, total_steps=5)
    two = [Phase("a", 0.5, learning_rates={"enc": 1.0}), Phase("b", 0.5, learning_rates={})]
    with pytest.raises(ValueError, match=r"phases\[1\] \('b'\).*no rate for group 'enc'"):
        training.phased_optimizer(two, param_labels=lambda p: p, total_steps=5)
    with pytest.raises(TypeError, match="phases"):
        training.phased_optimizer([{"name": "a"}], param_labels=lambda p: p, total_steps=5)


class _EncDec(nnx.Module):
    def __init__(self, rngs):
        self.enc = nnx.Linear(4, 8, rngs=rngs)
        self.dec = nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x):
        return self.dec(jax.nn.relu(self.enc(x)))


def _two_phases():
    return [
        Phase("first", 0.5, learning_rates={"enc": 1e-2, "dec": 1e-2}, frozen=("dec",)),
        Phase("second", 0.5, learning_rates={"enc": 1e-2, "dec": 1e-2}, frozen=("enc",)),
    ]


def _moved(before, after):
    """Group (the first key of a parameter's path) -> whether any of its parameters changed."""
    out = {}
    flat = jax.tree_util.tree_flatten_with_path(before)[0]
    pairs = zip(flat, jax.tree.leaves(after), strict=True)
    for (path, a), b in pairs:
        group = training.param_path(path).split("/")[0]
        out[group] = out.get(group, False) or not np.array_equal(np.asarray(a), np.asarray(b))
    return out


def test_with_nnx_optimizer():
    model = _EncDec(nnx.Rngs(0))
    labels = training.label_params([(r"enc/.*", "enc"), (r"dec/.*", "dec")])
    tx = training.phased_optimizer(
        _two_phases(), param_labels=labels, total_steps=10, warmup_fraction=0.0
    )
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jnp.ones((2, 4))

    @nnx.jit
    def step(model, opt):
        grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
        opt.update(model, grads)

    for phase in range(2):
        before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        for _ in range(5):
            step(model, opt)
        moved = _moved(before, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
        assert moved == ({"enc": True, "dec": False} if phase == 0 else {"enc": False, "dec": True})


def test_with_a_linen_train_state():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4, name="dec")(nn.relu(nn.Dense(8, name="enc")(x)))

    x = jnp.ones((2, 4))
    params = Net().init(jax.random.PRNGKey(0), x)
    labels = training.label_params([(r"params/enc/.*", "enc"), (r"params/dec/.*", "dec")])
    tx = training.phased_optimizer(
        _two_phases(), param_labels=labels, total_steps=10, warmup_fraction=0.0
    )
    state = train_state.TrainState.create(apply_fn=Net().apply, params=params, tx=tx)

    @jax.jit
    def step(state):
        grads = jax.grad(lambda p: jnp.sum(state.apply_fn(p, x) ** 2))(state.params)
        return state.apply_gradients(grads=grads)

    for phase in range(2):
        before = state.params
        for _ in range(5):
            state = step(state)
        moved = _moved(before["params"], state.params["params"])
        assert moved == ({"enc": True, "dec": False} if phase == 0 else {"enc": False, "dec": True})


def _documented_example() -> str:
    text = DOCS.read_text()
    match = re.search(r"<!-- user-loop-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/training.md has no user-loop example"
    return match.group(1)


def test_documented_user_loop_runs_and_does_what_it_says():
    """The example of docs/training.md, run as written: an NNX model with `enc` / `dec`, adamw,
    an MAE phase then a DSSIM+MAE phase switching at step 30, under jax.jit."""
    namespace = {}
    exec(compile(_documented_example(), str(DOCS), "exec"), namespace)
    log, steps = namespace["log"], namespace["total_steps"]
    assert [r["step"] for r in log] == list(range(steps))
    assert namespace["train_step"] is not None
    assert namespace["traces"] == [1]  # one compiled step for both phases
    # Weights: MAE only before step 30, the DSSIM+MAE mix from 30 on.
    assert {(r["structural_weight"], r["mae_weight"]) for r in log[:30]} == {(0.0, 1.0)}
    np.testing.assert_allclose(
        [(r["structural_weight"], r["mae_weight"]) for r in log[30:]], [(0.8, 0.2)] * 30
    )
    # Once-per-run warm-up: the rate at the switch is the new peak times the run's shape.
    ref = _reference_lr(30, peak=1e-3, start=0, steps=steps, warmup=3, final=0.1)
    np.testing.assert_allclose(log[30]["lr_dec"], ref, rtol=1e-5)
    assert log[30]["lr_dec"] > 0 and log[30]["lr_enc"] == 0.0  # enc frozen in phase 2
    # Which parameters move: both groups in the MAE phase, only the decoder after the switch.
    assert all(r["moved"] == {"enc": True, "dec": True} for r in log[1:30])
    assert all(r["moved"] == {"enc": False, "dec": True} for r in log[31:])
    assert np.mean([r["loss"] for r in log[-5:]]) < np.mean([r["loss"] for r in log[30:35]])
