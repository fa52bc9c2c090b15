"""The vaejax variants of the benchmark: ``jax_step`` (:func:`vaejax.training.make_train_step`
in a Python loop over host batches) and ``jax_epoch`` (:func:`vaejax.training.make_epoch_runner`:
the whole epoch as one compiled loop over data on the device(s)), for the VAEs
(:func:`run_jax`), the DCGAN (:func:`run_jax_gan`) and the DDPM's U-Net (:func:`run_jax_ddpm`).
JAX is imported when a runner runs."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from experiments.benchmarking.common import DDPM_METRICS, GAN_METRICS, SETTINGS, summary


def run_jax(
    variant: str,
    train: np.ndarray,
    test: np.ndarray,
    *,
    batch_size: int,
    epochs: int,
    seed: int = 1,
    model: str = "mlp",
) -> dict[str, Any]:
    """``jax_step`` or ``jax_epoch`` on uint8 images [N, 28, 28, 1]; all devices."""
    import jax
    import jax.numpy as jnp
    import optax

    from vaejax import data, models, objectives, sharding, training

    mesh = sharding.data_mesh()
    settings = SETTINGS[model]
    size = settings["size"]
    vae = models.mlp_vae() if model == "mlp" else models.conv_vae()
    init_key, data_key, step_key, eval_key = (
        jax.random.fold_in(jax.random.key(seed), i) for i in range(4)
    )
    params = jax.jit(vae.init)(init_key, jnp.zeros((1, size, size, 1)), init_key)["params"]
    optimizer = optax.adam(settings["learning_rate"], eps=settings["adam_eps"])
    per_example = objectives.vae_per_example(vae, beta=settings["beta"])
    update = training.gradient_update(objectives.batch_mean(per_example), optimizer)
    preprocess = data.make_batch_preprocessor(size)
    state = sharding.put_replicated(training.create_train_state(params, optimizer), mesh)
    state, seconds, _ = _jax_epochs(
        variant,
        update,
        preprocess,
        state,
        train,
        mesh,
        batch_size=batch_size,
        epochs=epochs,
        data_key=data_key,
        step_key=step_key,
    )
    evaluate = training.make_evaluator(per_example, preprocess, batch_size=1000, mesh=mesh)
    test_loss = float(evaluate(state.params, sharding.put_replicated(test, mesh), eval_key)["loss"])
    steps = len(train) // batch_size
    return summary(seconds, steps * batch_size, test_loss, _jax_extra(mesh))


def run_jax_gan(
    variant: str,
    train: np.ndarray,
    *,
    batch_size: int,
    epochs: int,
    seed: int = 1,
    image_size: int = 28,
    width: int = 64,
) -> dict[str, Any]:
    """``jax_step`` or ``jax_epoch`` of the DCGAN (:func:`vaejax.training.gan.make_gan_update`,
    BCE game, non-saturating generator, one discriminator step per generator step) on uint8
    images [N, 28, 28, 1]; all devices. Reports the last epoch's means of
    :data:`~experiments.benchmarking.common.GAN_METRICS`."""
    import jax
    import optax

    from vaejax import data, models, sharding
    from vaejax.training import gan as gan_training

    mesh = sharding.data_mesh()
    settings = SETTINGS["dcgan"]
    model = models.dcgan(image_size, 1, width, settings["noise_dim"])
    data_key, step_key = (jax.random.fold_in(jax.random.key(seed), i) for i in range(1, 3))
    # the initial weights through the "rbg" generator: XLA compiles the init's threefry
    # draws for 20 s on a 2-core CPU (rbg: 4 s); not timed either way, and the same
    # distributions; the training steps draw their noise with threefry keys, as experiments do
    params = jax.jit(model.init)(jax.random.key(seed, impl="rbg"))
    beta1, beta2 = settings["betas"]
    optimizer = optax.adam(settings["learning_rate"], b1=beta1, b2=beta2)
    update = gan_training.make_gan_update(
        model, loss="bce", generator_optimizer=optimizer, discriminator_optimizer=optimizer
    )
    preprocess = data.to_tanh_range(data.make_batch_preprocessor(image_size))
    state = sharding.put_replicated(
        gan_training.create_gan_state(params, optimizer, optimizer), mesh
    )
    return _epochs_summary(
        variant,
        update,
        preprocess,
        state,
        train,
        mesh,
        GAN_METRICS,
        batch_size=batch_size,
        epochs=epochs,
        data_key=data_key,
        step_key=step_key,
    )


def run_jax_ddpm(
    variant: str, train: np.ndarray, *, batch_size: int, epochs: int, seed: int = 1, width: int = 32
) -> dict[str, Any]:
    """``jax_step`` or ``jax_epoch`` of ``experiments.ddpm_mnist``'s update (U-Net of ``width``
    channels, noise-prediction MSE, clipping, Adam with warmup, EMA) on uint8 images
    [N, 28, 28, 1] in [-1, 1]; reports the last epoch's mean loss."""
    import jax
    import optax

    from vaejax import data, objectives, sharding, training
    from vaejax.models.unet import UNet
    from vaejax.objectives.diffusion import Diffusion, make_schedule, noise_prediction_loss
    from vaejax.runs.ddpm import optimizer
    from vaejax.training.ema import EMAState, with_ema

    mesh = sharding.data_mesh()
    s = SETTINGS["unet"]
    model = Diffusion(UNet(width, s["multipliers"]), make_schedule("linear", s["timesteps"]))
    data_key, step_key = (jax.random.fold_in(jax.random.key(seed), i) for i in range(1, 3))
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(seed, impl="rbg"), (28, 28, 1))
    warmup = optax.linear_schedule(0.0, s["learning_rate"], s["warmup_steps"])
    tx = optimizer(warmup, s["clip_norm"], 1e-8)
    update = with_ema(
        training.gradient_update(objectives.batch_mean(noise_prediction_loss(model)), tx),
        s["ema_decay"],
    )
    ema = jax.tree_util.tree_map(np.array, params)  # its own buffers: the state is donated
    state = EMAState(training.create_train_state(params, tx), ema)
    state = sharding.put_replicated(state, mesh)
    preprocess = data.to_tanh_range(data.make_batch_preprocessor(28))
    return _epochs_summary(
        variant,
        update,
        preprocess,
        state,
        train,
        mesh,
        DDPM_METRICS,
        batch_size=batch_size,
        epochs=epochs,
        data_key=data_key,
        step_key=step_key,
    )


def _epochs_summary(
    variant, update, preprocess, state, train, mesh, names, *, batch_size, epochs, **keys
) -> dict[str, Any]:
    """Trains as :func:`_jax_epochs` does; the summary with the last epoch's means of the
    metrics ``names`` in place of a test loss."""
    from vaejax import training

    _, seconds, metrics = _jax_epochs(
        variant,
        update,
        preprocess,
        state,
        train,
        mesh,
        batch_size=batch_size,
        epochs=epochs,
        **keys,
    )
    means = training.mean_metrics({k: metrics[k] for k in names})
    return summary(
        seconds, len(train) // batch_size * batch_size, None, {**_jax_extra(mesh), **means}
    )


def _jax_epochs(
    variant: str,
    update,
    preprocess,
    state,
    train: np.ndarray,
    mesh,
    *,
    batch_size: int,
    epochs: int,
    data_key,
    step_key,
):
    """Trains ``epochs`` epochs of ``variant``; returns (state, seconds per epoch, the last
    epoch's per-step metrics as [steps] arrays, on the device)."""
    loop = {"jax_epoch": _compiled_epochs, "jax_step": _python_loop_epochs}.get(variant)
    if loop is None:
        raise ValueError(f"unknown jax variant {variant!r}")
    return loop(
        update,
        preprocess,
        state,
        train,
        mesh,
        batch_size=batch_size,
        epochs=epochs,
        data_key=data_key,
        step_key=step_key,
    )


def _compiled_epochs(
    update,
    preprocess,
    state,
    train: np.ndarray,
    mesh,
    *,
    batch_size: int,
    epochs: int,
    data_key,
    step_key,
):
    """``jax_epoch``: each epoch one call of the compiled epoch runner, the data on the device."""
    import jax

    from vaejax import sharding, training

    runner = training.make_epoch_runner(
        update, preprocess, batch_size=batch_size, num_examples=len(train), mesh=mesh
    )
    on_device = sharding.put_replicated(train, mesh)
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        state, metrics = runner(state, on_device, data_key, step_key, epoch)
        jax.block_until_ready(state)
        seconds.append(time.perf_counter() - start)
    return state, seconds, metrics


def _python_loop_epochs(
    update,
    preprocess,
    state,
    train: np.ndarray,
    mesh,
    *,
    batch_size: int,
    epochs: int,
    data_key,
    step_key,
):
    """``jax_step``: the compiled step in a Python loop over host batches, in the epoch
    runner's order (the same permutation, the same step keys)."""
    import jax
    import jax.numpy as jnp

    from vaejax import training

    train_step = training.make_train_step(update, preprocess, mesh)
    steps = len(train) // batch_size
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        order = np.asarray(training.epoch_permutation(data_key, epoch, len(train)))
        epoch_metrics = []
        for i in range(steps):
            batch = train[order[i * batch_size : (i + 1) * batch_size]]
            state, step_metrics = train_step(state, batch, step_key, epoch * steps + i)
            epoch_metrics.append(step_metrics)
        jax.block_until_ready(state)
        seconds.append(time.perf_counter() - start)
    metrics = jax.tree_util.tree_map(lambda *values: jnp.stack(values), *epoch_metrics)
    return state, seconds, metrics


def _jax_extra(mesh) -> dict[str, Any]:
    import jax

    extra = {"devices": mesh.size, "platform": jax.devices()[0].platform}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        extra["peak_device_mib"] = stats["peak_bytes_in_use"] / 2**20
    return extra
