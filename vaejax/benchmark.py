"""Throughput of the pytorch/examples VAE in PyTorch and in vaejax, on the same data and machine.

Each *variant* trains the 784-400-20 MLP VAE (Adam 1e-3, summed BCE + KL, grey MNIST) for a
number of epochs and reports images/second over the warm epochs (median), the first epoch's
time (compilation, warm-up), the test negative ELBO after training, and peak memory:

- ``torch_example``: pytorch/examples ``vae/main.py`` as a user runs it: a ``DataLoader``
  (shuffle, batch 128, last batch kept) over a dataset whose items go through PIL and
  ``ToTensor`` as torchvision's MNIST does, eager PyTorch, ``loss.item()`` every step.
- ``torch_tuned``: fair to PyTorch: the training set is one float tensor on the device, batches
  are index slices of a ``randperm`` (ragged batch dropped, as vaejax does), no per-step host
  sync; with ``torch_compile`` the model and loss go through ``torch.compile``.
- ``jax_step``: vaejax's ``make_train_step`` in a Python loop over host batches.
- ``jax_epoch``: vaejax's ``make_epoch_runner``: the whole epoch as one compiled loop over data on
  the device(s).

FLOPs are counted analytically (:func:`mlp_vae_train_flops`); the machine's matrix-multiply peak
is measured in the same run (:func:`matmul_peak_flops`).
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any, Callable

import numpy as np

VARIANTS = ("torch_example", "torch_tuned", "jax_step", "jax_epoch")


def mlp_vae_train_flops(pixels: int = 784, hidden: int = 400, latent: int = 20) -> int:
    """FLOPs per image of one training step of the MLP VAE (multiply-adds count 2).

    Forward: the five matrix products, M = pixels*hidden + 2*hidden*latent + latent*hidden +
    hidden*pixels multiply-adds. Backward: the gradients of the weights (M) and of each layer's
    input (M, less the first layer's, pixels*hidden, which nothing needs). Elementwise work
    (activations, the loss, Adam) is left out: it is O(parameters + pixels), under 1% here.
    """
    macs = pixels * hidden + 2 * hidden * latent + latent * hidden + hidden * pixels
    return 2 * (3 * macs - pixels * hidden)


def matmul_peak_flops(n: int = 2048, repeats: int = 10) -> float:
    """The FLOP/s of a jitted float32 [n, n] @ [n, n] product on the default device (median)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    product = jax.jit(lambda a, b: a @ b)
    product(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def peak_host_mib() -> float:
    """This process's peak resident memory, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _summary(epoch_seconds: list[float], images_per_epoch: int, test_loss: float,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    warm = epoch_seconds[1:] or epoch_seconds
    return {"images_per_second": images_per_epoch / statistics.median(warm),
            "first_epoch_seconds": epoch_seconds[0], "epoch_seconds": epoch_seconds,
            "test_negative_elbo": test_loss, "peak_host_mib": peak_host_mib(), **(extra or {})}


# ---------------------------------------------------------------------------------------------
# vaejax


def run_jax(variant: str, train: np.ndarray, test: np.ndarray, *, batch_size: int, epochs: int,
            seed: int = 1) -> dict[str, Any]:
    """``jax_step`` or ``jax_epoch`` on uint8 images [N, 28, 28, 1]; all devices."""
    import jax
    import jax.numpy as jnp
    import optax

    from vaejax import data, models, objectives, training

    mesh = training.data_mesh()
    model = models.mlp_vae()
    init_key, data_key, step_key, eval_key = (
        jax.random.fold_in(jax.random.key(seed), i) for i in range(4))
    params = model.init(init_key, jnp.zeros((1, 28, 28, 1)), init_key)["params"]
    optimizer = optax.adam(1e-3)
    per_example = objectives.vae_per_example(model)
    update = training.gradient_update(objectives.batch_mean(per_example), optimizer)
    preprocess = data.make_batch_preprocessor(28)
    state = training.put_replicated(training.create_train_state(params, optimizer), mesh)
    steps = len(train) // batch_size
    seconds = []
    if variant == "jax_epoch":
        runner = training.make_epoch_runner(update, preprocess, batch_size=batch_size,
                                            num_examples=len(train), mesh=mesh)
        on_device = training.put_replicated(train, mesh)
        for epoch in range(epochs):
            start = time.perf_counter()
            state, metrics = runner(state, on_device, data_key, step_key, epoch)
            jax.block_until_ready(state)
            seconds.append(time.perf_counter() - start)
    elif variant == "jax_step":
        train_step = training.make_train_step(update, preprocess, mesh)
        for epoch in range(epochs):
            start = time.perf_counter()
            order = np.asarray(training.epoch_permutation(data_key, epoch, len(train)))
            for i in range(steps):
                batch = train[order[i * batch_size:(i + 1) * batch_size]]
                state, metrics = train_step(state, batch, step_key, epoch * steps + i)
            jax.block_until_ready(state)
            seconds.append(time.perf_counter() - start)
    else:
        raise ValueError(f"unknown jax variant {variant!r}")
    evaluate = training.make_evaluator(per_example, preprocess, batch_size=1000, mesh=mesh)
    test_loss = float(evaluate(state.params, training.put_replicated(test, mesh), eval_key)["loss"])
    extra = {"devices": mesh.size, "platform": jax.devices()[0].platform}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        extra["peak_device_mib"] = stats["peak_bytes_in_use"] / 2**20
    return _summary(seconds, steps * batch_size, test_loss, extra)


# ---------------------------------------------------------------------------------------------
# PyTorch


class _PILMnist:
    """A map-style dataset whose items are made as torchvision's MNIST makes them: the uint8
    array -> ``PIL.Image`` (mode L) -> ``ToTensor`` (float32 [1, 28, 28] in [0, 1])."""

    def __init__(self, images: np.ndarray):
        self.images = images[..., 0]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        import PIL.Image
        import torch

        picture = PIL.Image.fromarray(self.images[index], mode="L")
        pixels = np.asarray(picture, dtype=np.float32) / 255.0
        return torch.from_numpy(pixels)[None], 0


def _torch_test_loss(model, test: np.ndarray, device) -> float:
    import torch

    from vaejax.torch_reference import example_loss

    model.eval()
    total = 0.0
    with torch.no_grad():
        x_all = torch.from_numpy(test.astype(np.float32) / 255.0).to(device)
        for x in torch.split(x_all, 1000):
            probs, mean, log_var = model(x)
            total += float(example_loss(probs, x, mean, log_var))
    return total / len(test)


def run_torch(variant: str, train: np.ndarray, test: np.ndarray, *, batch_size: int,
              epochs: int, seed: int = 1, compile_model: bool = False) -> dict[str, Any]:
    """``torch_example`` or ``torch_tuned`` on uint8 images [N, 28, 28, 1]; CUDA if present."""
    import torch

    from vaejax.torch_reference import ExampleMLPVAE, example_loss

    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = ExampleMLPVAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    extra: dict[str, Any] = {"platform": device.type, "torch_threads": torch.get_num_threads()}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    seconds = []
    if variant == "torch_example":
        loader = torch.utils.data.DataLoader(
            _PILMnist(train), batch_size=batch_size, shuffle=True,
            **({"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}))
        images_per_epoch = len(train)
        for _ in range(epochs):
            start = time.perf_counter()
            model.train()
            train_loss = 0.0
            for x, _ in loader:
                x = x.to(device)
                optimizer.zero_grad()
                probs, mean, log_var = model(x)
                loss = example_loss(probs, x, mean, log_var)
                loss.backward()
                train_loss += loss.item()
                optimizer.step()
            sync()
            seconds.append(time.perf_counter() - start)
    elif variant == "torch_tuned":
        x_all = torch.from_numpy(train.astype(np.float32) / 255.0).reshape(len(train), -1)
        x_all = x_all.to(device)
        steps = len(train) // batch_size
        images_per_epoch = steps * batch_size

        def step(x):
            optimizer.zero_grad(set_to_none=True)
            probs, mean, log_var = model(x)
            loss = example_loss(probs, x, mean, log_var)
            loss.backward()
            optimizer.step()
            return loss.detach()

        if compile_model:
            try:
                step = torch.compile(step)
                extra["torch_compile"] = True
            except Exception as e:  # pragma: no cover - depends on the toolchain
                extra["torch_compile"] = f"failed: {type(e).__name__}"
        for _ in range(epochs):
            start = time.perf_counter()
            model.train()
            order = torch.randperm(len(train), device=device)
            total = torch.zeros((), device=device)
            for i in range(steps):
                total += step(x_all[order[i * batch_size:(i + 1) * batch_size]])
            float(total)
            sync()
            seconds.append(time.perf_counter() - start)
    else:
        raise ValueError(f"unknown torch variant {variant!r}")
    if device.type == "cuda":
        extra["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return _summary(seconds, images_per_epoch, _torch_test_loss(model, test, device), extra)


def run_variant(variant: str, train: np.ndarray, test: np.ndarray, **kwargs) -> dict[str, Any]:
    runner: Callable = run_jax if variant.startswith("jax") else run_torch
    if variant.startswith("jax"):
        kwargs.pop("compile_model", None)
    return {"variant": variant, **runner(variant, train, test, **kwargs)}
