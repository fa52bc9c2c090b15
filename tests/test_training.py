"""Training machinery: updates, scan vs Python loop, data order, evaluation, 8 vs 1 device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers import run_on_devices
from vaejax import data, models, objectives, sharding, training


def test_gradient_update_is_one_optimizer_step():
    target = jnp.array([1.0, -2.0, 3.0])
    loss_fn = lambda p, batch, key: (jnp.sum((p - batch) ** 2), {"loss": jnp.sum((p - batch) ** 2)})
    optimizer = optax.sgd(0.1)
    state = training.create_train_state(jnp.zeros(3), optimizer)
    new_state, metrics = training.gradient_update(loss_fn, optimizer)(state, target, None)
    grad = 2 * (jnp.zeros(3) - target)
    np.testing.assert_allclose(new_state.params, -0.1 * grad, rtol=1e-6)
    assert int(new_state.step) == 1
    assert float(metrics["loss"]) == pytest.approx(14.0)
    assert float(metrics["grad_norm"]) == pytest.approx(float(jnp.linalg.norm(grad)))


def _counting_update(state, batch, key):
    """A 'model' that counts how often each example id was visited."""
    del key
    return state.at[batch].add(1), {"loss": jnp.sum(batch).astype(jnp.float32)}


def test_epoch_visits_a_permutation_and_drops_the_ragged_batch():
    n, batch_size = 100, 32
    run_epoch = training.make_epoch_runner(
        _counting_update, None, batch_size=batch_size, num_examples=n
    )
    assert run_epoch.steps_per_epoch == 3
    data_key, base_key = jax.random.key(0), jax.random.key(1)
    ids = jnp.arange(n)
    counts, metrics = run_epoch(jnp.zeros(n, jnp.int32), ids, data_key, base_key, 0)
    assert metrics["loss"].shape == (3,)
    order = np.asarray(training.epoch_permutation(data_key, 0, n))
    assert sorted(order.tolist()) == list(range(n))
    counts = np.asarray(counts)
    assert counts.sum() == 96 and set(counts.tolist()) == {0, 1}
    assert sorted(np.flatnonzero(counts == 0).tolist()) == sorted(order[96:].tolist())
    # another epoch: another order; the same epoch again: the same order
    next_counts, _ = run_epoch(jnp.zeros(n, jnp.int32), ids, data_key, base_key, 1)
    assert not np.array_equal(np.asarray(next_counts), counts)
    same, _ = run_epoch(jnp.zeros(n, jnp.int32), ids, data_key, base_key, 0)
    assert np.array_equal(np.asarray(same), counts)


def _vae_setup(batch_size=16, n=64, binarize=True):
    model = models.mlp_vae(latent_dim=4, hidden_dims=(32,))
    key = jax.random.key(0)
    params = model.init(key, jnp.zeros((1, 28, 28, 1)), key)["params"]
    optimizer = optax.adam(1e-3)
    update = training.gradient_update(
        objectives.batch_mean(objectives.vae_per_example(model)), optimizer
    )
    images = _prototype_images(n)
    preprocess = data.make_batch_preprocessor(28, dynamic_binarization=binarize)
    return params, optimizer, update, images, preprocess


def _prototype_images(n):
    """n uint8 images, each one of 4 random patterns: data a small VAE can learn quickly."""
    rng = np.random.default_rng(0)
    patterns = rng.random((4, 28, 28, 1)) < 0.2
    return np.where(patterns[rng.integers(0, 4, n)], 230, 10).astype(np.uint8)


def _fresh_state(params, optimizer):
    """A train state with its own copy of ``params`` (steps donate, i.e. consume, the state)."""
    return training.create_train_state(jax.tree_util.tree_map(jnp.copy, params), optimizer)


def test_scan_epoch_equals_python_loop_of_train_steps():
    params, optimizer, update, images, preprocess = _vae_setup()
    data_key, base_key = jax.random.key(10), jax.random.key(11)
    run_epoch = training.make_epoch_runner(update, preprocess, batch_size=16, num_examples=64)
    scan_state, scan_metrics = run_epoch(
        _fresh_state(params, optimizer), jnp.asarray(images), data_key, base_key, 2
    )

    train_step = training.make_train_step(update, preprocess)
    state = _fresh_state(params, optimizer)
    order = np.asarray(training.epoch_permutation(data_key, 2, 64)).reshape(4, 16)
    losses = []
    for i in range(4):
        state, metrics = train_step(state, images[order[i]], base_key, 2 * 4 + i)
        losses.append(float(metrics["loss"]))
    assert int(state.step) == int(scan_state.step) == 4
    np.testing.assert_allclose(losses, scan_metrics["loss"], rtol=1e-5)
    for a, b in zip(
        jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(scan_state.params)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_training_is_deterministic_given_the_seed():
    params, optimizer, update, images, preprocess = _vae_setup()
    run_epoch = training.make_epoch_runner(update, preprocess, batch_size=16, num_examples=64)

    def train(seed):
        state = _fresh_state(params, optimizer)
        data_key, base_key = jax.random.split(jax.random.key(seed))
        for epoch in range(2):
            state, _ = run_epoch(state, jnp.asarray(images), data_key, base_key, epoch)
        return jax.tree_util.tree_leaves(state.params)

    first, second, other = train(0), train(0), train(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_training_lowers_the_loss():
    params, optimizer, update, images, preprocess = _vae_setup(n=256, binarize=False)
    run_epoch = training.make_epoch_runner(update, preprocess, batch_size=32, num_examples=256)
    state = _fresh_state(params, optimizer)
    losses = []
    for epoch in range(5):
        state, metrics = run_epoch(
            state, jnp.asarray(images), jax.random.key(0), jax.random.key(1), epoch
        )
        losses.append(float(metrics["loss"].mean()))
    assert losses[-1] < losses[0] - 5


def test_a_two_player_update_runs_in_the_same_machinery():
    """A GAN-shaped game: a 'critic' fits the data mean, a 'generator' chases the critic.

    Each player is a TrainState with its own optimizer; the update is two gradient updates,
    the second seeing the first's new parameters. No second train loop is needed.
    """
    critic_opt, generator_opt = optax.sgd(0.1), optax.adam(0.05)
    critic_update = training.gradient_update(
        lambda p, batch, key: (jnp.mean((p - batch) ** 2), {}), critic_opt
    )

    def update(state, batch, key):
        critic_key, generator_key = jax.random.split(key)
        critic, critic_metrics = critic_update(state["critic"], batch, critic_key)
        chase = lambda p, batch, key: ((p - jax.lax.stop_gradient(critic.params)) ** 2, {})
        generator, generator_metrics = training.gradient_update(chase, generator_opt)(
            state["generator"], batch, generator_key
        )
        return (
            {"critic": critic, "generator": generator},
            {"critic_loss": critic_metrics["loss"], "generator_loss": generator_metrics["loss"]},
        )

    samples = 3.0 + jax.random.normal(jax.random.key(0), (512,))
    state = {
        "critic": training.create_train_state(jnp.zeros(()), critic_opt),
        "generator": training.create_train_state(jnp.zeros(()), generator_opt),
    }
    run_epoch = training.make_epoch_runner(update, None, batch_size=64, num_examples=512)
    for epoch in range(10):
        state, metrics = run_epoch(state, samples, jax.random.key(1), jax.random.key(2), epoch)
    assert int(state["critic"].step) == int(state["generator"].step) == 80
    assert float(state["critic"].params) == pytest.approx(float(samples.mean()), abs=0.1)
    assert float(state["generator"].params) == pytest.approx(float(samples.mean()), abs=0.2)
    assert metrics["generator_loss"].shape == (8,)


def test_stretches_of_steps_equal_the_whole_epoch_bit_for_bit():
    """Any split of an epoch into stretches (a checkpoint, a preemption) gives the same bits."""
    params, optimizer, update, images, preprocess = _vae_setup(n=160)
    runner = training.make_epoch_runner(update, preprocess, batch_size=16, num_examples=160)
    data_key, base_key, images = jax.random.key(3), jax.random.key(4), jnp.asarray(images)
    whole, whole_metrics = runner(_fresh_state(params, optimizer), images, data_key, base_key, 1)

    state = _fresh_state(params, optimizer)
    metrics = runner.new_metrics(state, images)
    order = runner.order(data_key, 1)
    for start, stop in [(0, 3), (3, 4), (4, 9), (9, 10)]:
        state, metrics, position = runner.run(
            state, metrics, images, order, base_key, 1, start, stop
        )
        assert int(position) == stop
    for a, b in zip(
        jax.tree_util.tree_leaves((whole, whole_metrics)),
        jax.tree_util.tree_leaves((state, metrics)),
        strict=True,
    ):
        assert np.array_equal(a, b)
    assert bool(np.all(metrics["finite"]))


def _poisoned_update(state, batch, key):
    """SGD on the batch mean; a batch holding a NaN example gives a NaN loss and gradient."""
    del key
    loss, grad = jax.value_and_grad(lambda p: jnp.mean((p - batch) ** 2))(state)
    return state - 0.1 * grad, {"loss": loss}


@pytest.mark.parametrize("policy", training.NONFINITE_POLICIES)
def test_non_finite_steps_stop_the_loop_or_are_skipped(policy):
    samples = np.arange(64, dtype=np.float32)
    samples[37] = np.nan
    runner = training.make_epoch_runner(
        _poisoned_update, None, batch_size=8, num_examples=64, nonfinite=policy
    )
    order = runner.order(jax.random.key(0), 0)
    bad = int(np.flatnonzero(np.any(np.asarray(order) == 37, axis=1))[0])
    state, metrics, position = runner.run(
        jnp.float32(0.0),
        runner.new_metrics(0.0, samples),
        jnp.asarray(samples),
        order,
        jax.random.key(1),
        0,
        0,
        8,
    )
    finite = np.asarray(metrics["finite"])
    if policy == "stop":
        assert int(position) == bad and finite[:bad].all() and not finite[bad]
        assert np.isnan(float(state))  # the caller discards it
        with pytest.raises(training.NonFiniteError, match=f"at step {bad}"):
            runner(jnp.float32(0.0), jnp.asarray(samples), jax.random.key(0), jax.random.key(1), 0)
    else:
        assert int(position) == 8 and finite.sum() == 7 and not finite[bad]
        assert np.isfinite(float(state))
        means = training.mean_metrics(metrics)
        assert means["skipped_steps"] == 1 and np.isfinite(means["loss"])
        # the skipped step changed nothing: the same as running the other batches in order
        expected = 0.0
        for i in range(8):
            if i != bad:
                expected -= 0.1 * 2 * (expected - samples[np.asarray(order)[i]].mean())
        assert float(state) == pytest.approx(expected, rel=1e-5)


def test_evaluator_counts_every_example_once():
    n = 1003  # not a multiple of the batch size: the last batch is padded and masked
    values = np.random.default_rng(0).random((n, 3)).astype(np.float32)
    per_example = lambda params, x, key: {"loss": params * x.sum(-1), "first": x[:, 0]}
    evaluate = training.make_evaluator(per_example, batch_size=100)
    result = evaluate(2.0, jnp.asarray(values), jax.random.key(0))
    assert float(result["loss"]) == pytest.approx(2 * values.sum(-1).mean(), rel=1e-5)
    assert float(result["first"]) == pytest.approx(values[:, 0].mean(), rel=1e-5)


def test_batch_size_must_split_over_devices():
    sharding.check_batch_size(128, sharding.data_mesh().size)
    with pytest.raises(
        ValueError, match="does not split over 3 devices: use a multiple of 3, e.g. 126 or 129"
    ):
        sharding.check_batch_size(128, 3)
    with pytest.raises(ValueError, match="exceeds the 10 training examples"):
        training.make_epoch_runner(_counting_update, None, batch_size=16, num_examples=10)


MULTI_DEVICE_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
from vaejax import data, models, objectives, sharding, training

mesh = sharding.data_mesh()
model = models.mlp_vae()
key = jax.random.key(0)
params = model.init(key, jnp.zeros((1, 28, 28, 1)), key)["params"]
optimizer = optax.sgd(1e-3)  # linear in the gradient: no amplification of rounding, unlike Adam
per_example = objectives.vae_per_example(model)
update = training.gradient_update(objectives.batch_mean(per_example), optimizer)
rng = np.random.default_rng(0)
patterns = rng.random((4, 28, 28, 1)) < 0.2
images = np.where(patterns[rng.integers(0, 4, 512)], 230, 10).astype(np.uint8)
run_epoch = training.make_epoch_runner(update, data.make_batch_preprocessor(28, True),
                                       batch_size=64, num_examples=512, mesh=mesh)
state = sharding.put_replicated(training.create_train_state(params, optimizer), mesh)
on_device = sharding.put_replicated(images, mesh)
losses = []
for epoch in range(2):  # 16 steps
    state, metrics = run_epoch(state, on_device, jax.random.key(2), jax.random.key(3), epoch)
    losses += np.asarray(metrics["loss"]).tolist()
evaluate = training.make_evaluator(per_example, data.make_batch_preprocessor(28),
                                   batch_size=64, mesh=mesh)
test = evaluate(state.params, on_device, jax.random.key(4))
leaf = jax.tree_util.tree_leaves(state.params)[0]
np.savez(sys.argv[1], *[np.asarray(p) for p in jax.tree_util.tree_leaves(state.params)])
print(json.dumps({"devices": jax.device_count(), "losses": losses,
                  "test": float(test["loss"]), "param_devices": len(leaf.sharding.device_set)}))
"""


def test_eight_devices_match_one(tmp_path):
    results = {}
    for count in (1, 8):
        out = tmp_path / f"params_{count}.npz"
        results[count] = run_on_devices(MULTI_DEVICE_SCRIPT, count, str(out))
        results[count]["params"] = dict(np.load(out))
    one, eight = results[1], results[8]
    assert one["devices"] == 1 and eight["devices"] == 8
    assert eight["param_devices"] == 8  # replicated on every device
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)
    assert eight["losses"][-1] < eight["losses"][0] - 20  # it did train
    assert eight["test"] == pytest.approx(one["test"], rel=1e-5)
    for name, value in one["params"].items():
        np.testing.assert_allclose(eight["params"][name], value, rtol=1e-5, atol=1e-6)


ROWS_SPLIT = """
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
from vaejax import data, models, objectives, sharding, training
mesh = sharding.data_mesh()
n = 66  # 17 rows on each of 4 devices; the last device's 2 past the end are padding
rng = np.random.default_rng(0)
images = (rng.random((n, 28, 28, 1)) * 255).astype(np.uint8)
labels = np.arange(n, dtype=np.int32)
model = models.mlp_vae(latent_dim=4, hidden_dims=(32,))
key = jax.random.key(0)
params = model.init(key, jnp.zeros((1, 28, 28, 1)), key)["params"]
tx = optax.adam(1e-3)
per_example = objectives.vae_per_example(model)
update = training.gradient_update(objectives.batch_mean(per_example), tx)
preprocess = data.make_batch_preprocessor(28, dynamic_binarization=True)
out = {"devices": mesh.size}
for split in (False, True):
    runner = training.make_epoch_runner(
        update, preprocess, batch_size=16, num_examples=n, mesh=mesh, rows_sharded=split
    )
    put = sharding.put_row_sharded if split else sharding.put_replicated
    placed = put(images, mesh)
    out[f"rows_on_a_device_{split}"] = placed.addressable_shards[0].data.shape[0]
    fresh = jax.tree_util.tree_map(jnp.copy, params)  # the steps donate (consume) the state
    state = sharding.put_replicated(training.create_train_state(fresh, tx), mesh)
    for epoch in range(2):
        state, metrics = runner(state, placed, jax.random.key(1), jax.random.key(2), epoch)
    out[f"loss_{split}"] = np.asarray(metrics["loss"]).tolist()
    leaves = jax.tree_util.tree_leaves(state.params)
    out[f"params_{split}"] = [np.asarray(p).tolist() for p in leaves]
evaluate = training.make_evaluator(per_example, preprocess, batch_size=16, mesh=mesh)
for split in (False, True):
    put = sharding.put_row_sharded if split else sharding.put_replicated
    terms = evaluate(params, put(images, mesh), jax.random.key(3), n)
    out[f"eval_{split}"] = {k: float(v) for k, v in terms.items()}
gather = jax.jit(sharding.gather_rows(mesh))
rows = jnp.array([65, 0, 16, 17, 33, 34, 50, 51], jnp.int32)  # both sides of every boundary
placed = sharding.put_row_sharded((images, labels), mesh)
picked = gather(placed, rows)
out["gathered"] = bool(np.array_equal(np.asarray(picked[0]), images[np.asarray(rows)]))
out["gathered_labels"] = np.asarray(picked[1]).tolist()
out["batch_shards"] = len(picked[0].addressable_shards)
print(json.dumps(out))
"""


def test_data_split_by_rows_over_devices_trains_bit_for_bit_like_a_copy_on_each():
    """4 devices: each holds a quarter of the rows (padded), each step's batch gathered by one
    reduce-scatter; two epochs end with the same parameters, bit for bit, as with the whole
    dataset on every device, and an evaluation of the split rows gives the same means."""
    out = run_on_devices(ROWS_SPLIT, 4)
    assert out["devices"] == 4
    assert out["rows_on_a_device_False"] == 66 and out["rows_on_a_device_True"] == 17
    assert out["gathered"] and out["batch_shards"] == 4
    assert out["gathered_labels"] == [65, 0, 16, 17, 33, 34, 50, 51]
    assert out["loss_True"] == out["loss_False"]
    assert out["params_True"] == out["params_False"]
    assert out["eval_True"] == out["eval_False"]  # the padding rows are left out
