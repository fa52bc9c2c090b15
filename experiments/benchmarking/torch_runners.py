"""The PyTorch variants of the benchmark, on the twins in
:mod:`experiments.benchmarking.torch_reference` (the VAEs) and
:mod:`experiments.benchmarking.torch_dcgan`: ``torch_example`` (the MLP as pytorch/examples
runs it) and ``torch_tuned`` (data on the device, no per-step host sync, optionally through
``torch.compile``) for the VAEs (:func:`run_torch`), ``torch_tuned`` for the DCGAN
(:func:`run_torch_gan`) and the DDPM's U-Net (:func:`run_torch_ddpm`). torch is imported when a
runner runs; CUDA is used if present."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from experiments.benchmarking.common import GAN_METRICS, SETTINGS, summary


def run_torch(
    variant: str,
    train: np.ndarray,
    test: np.ndarray,
    *,
    batch_size: int,
    epochs: int,
    seed: int = 1,
    compile_model: bool = False,
    model: str = "mlp",
) -> dict[str, Any]:
    """``torch_example`` (mlp only) or ``torch_tuned`` on uint8 images [N, 28, 28, 1]; CUDA if
    present."""
    import torch

    from experiments.benchmarking.torch_reference import ExampleMLPVAE, FosterConvVAE

    if model == "conv" and variant == "torch_example":
        raise ValueError(
            "torch_example is the pytorch/examples MLP; the conv model has torch_tuned"
        )
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = (ExampleMLPVAE() if model == "mlp" else FosterConvVAE()).to(device)
    settings = SETTINGS[model]
    optimizer = torch.optim.Adam(
        net.parameters(), lr=settings["learning_rate"], eps=settings["adam_eps"]
    )
    extra: dict[str, Any] = {"platform": device.type, "torch_threads": torch.get_num_threads()}
    if variant == "torch_example":
        seconds, images_per_epoch = _example_epochs(
            net, optimizer, train, batch_size=batch_size, epochs=epochs, device=device
        )
    elif variant == "torch_tuned":
        step = _vae_step(net, optimizer, _torch_loss(model))
        if compile_model:
            step = _torch_compiled(step, extra)
        x_all = _torch_images(train, model, device)
        seconds = _tuned_epochs(
            step, x_all, batch_size=batch_size, epochs=epochs, before_epoch=net.train, totals=()
        )
        images_per_epoch = len(train) // batch_size * batch_size
    else:
        raise ValueError(f"unknown torch variant {variant!r}")
    if device.type == "cuda":
        extra["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return summary(seconds, images_per_epoch, _torch_test_loss(net, test, model, device), extra)


def run_torch_gan(
    variant: str,
    train: np.ndarray,
    *,
    batch_size: int,
    epochs: int,
    seed: int = 1,
    compile_model: bool = False,
    image_size: int = 28,
    width: int = 64,
) -> dict[str, Any]:
    """``torch_tuned`` DCGAN training on uint8 images [N, 28, 28, 1]; CUDA if present.

    The training set is one tensor in [-1, 1] on the device, batches are index slices of a
    ``randperm`` (the ragged batch dropped), no per-step host sync (the losses are summed on the
    device and read once an epoch). One update, as
    :func:`vaejax.training.gan.make_gan_update`'s: fakes from fresh z made without a graph; a
    discriminator step on BCE-with-logits of the real batch (label 1) and the fakes (label 0),
    each through the discriminator on its own (batch norm on each batch's statistics, as
    pytorch/examples does); a generator step on fresh fakes with the non-saturating loss,
    ``backward(inputs=generator parameters)`` so no discriminator weight gradient is computed.
    With ``compile_model`` the update goes through ``torch.compile``.
    """
    import torch

    from experiments.benchmarking.torch_dcgan import DCGANDiscriminator, DCGANGenerator

    if variant != "torch_tuned":
        raise ValueError(f"the dcgan model's PyTorch variant is torch_tuned, not {variant!r}")
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    noise_dim = SETTINGS["dcgan"]["noise_dim"]
    generator = DCGANGenerator(image_size, 1, width, noise_dim).to(device).train()
    discriminator = DCGANDiscriminator(image_size, 1, width).to(device).train()
    extra: dict[str, Any] = {"platform": device.type, "torch_threads": torch.get_num_threads()}
    step = _gan_step(generator, discriminator, noise_dim, device)
    if compile_model:
        step = _torch_compiled(step, extra)
    x_all = _torch_gan_images(train, image_size, device)
    means: list[float] = []
    seconds = _tuned_epochs(
        step,
        x_all,
        batch_size=batch_size,
        epochs=epochs,
        totals=(len(GAN_METRICS),),
        on_epoch_means=means,
    )
    if device.type == "cuda":
        extra["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
    steps = len(train) // batch_size
    return summary(seconds, steps * batch_size, None, {**extra, **dict(zip(GAN_METRICS, means))})


def run_torch_ddpm(
    variant: str,
    train: np.ndarray,
    *,
    batch_size: int,
    epochs: int,
    seed: int = 1,
    compile_model: bool = False,
    width: int = 32,
) -> dict[str, Any]:
    """``torch_tuned`` DDPM training of the U-Net twin
    (:func:`experiments.benchmarking.torch_unet.ddpm_step`) on uint8 images [N, 28, 28, 1] in
    [-1, 1], the training set one tensor on the device, from the JAX run's initial weights; CUDA
    if present. Reports the last epoch's mean loss."""
    import torch

    from experiments.benchmarking.torch_unet import TorchUNet, ddpm_step, load_flax_unet_params

    if variant != "torch_tuned":
        raise ValueError(f"the unet model's PyTorch variant is torch_tuned, not {variant!r}")
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    s = SETTINGS["unet"]
    net = TorchUNet(1, width, s["multipliers"])
    load_flax_unet_params(net, _flax_unet_params(width, seed))  # the JAX run's initial weights
    net = net.to(device).train()
    extra: dict[str, Any] = {"platform": device.type, "torch_threads": torch.get_num_threads()}
    keys = ("learning_rate", "warmup_steps", "clip_norm", "ema_decay", "timesteps")
    step = ddpm_step(net, device=device, **{k: s[k] for k in keys})
    if compile_model:
        step = _torch_compiled(step, extra)
    means: list[float] = []
    seconds = _tuned_epochs(
        step,
        _torch_gan_images(train, 28, device),
        batch_size=batch_size,
        epochs=epochs,
        totals=(1,),
        on_epoch_means=means,
    )
    if device.type == "cuda":
        extra["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
    steps = len(train) // batch_size
    return summary(seconds, steps * batch_size, None, {**extra, "loss": float(means[0])})


def _flax_unet_params(width: int, seed: int):
    """The U-Net parameters :func:`~experiments.benchmarking.jax_runners.run_jax_ddpm` starts
    from (the same key, the same init), as numpy."""
    import jax

    from vaejax.models.unet import UNet
    from vaejax.objectives.diffusion import Diffusion, make_schedule

    s = SETTINGS["unet"]
    model = Diffusion(UNet(width, s["multipliers"]), make_schedule("linear", s["timesteps"]))
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(seed, impl="rbg"), (28, 28, 1))
    return jax.device_get(params)


def _sync(device) -> None:
    """Waits for the device's queued work (CUDA runs asynchronously)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _tuned_epochs(
    step: Callable,
    x_all,
    *,
    batch_size: int,
    epochs: int,
    totals: tuple[int, ...],
    before_epoch: Callable | None = None,
    on_epoch_means: list[float] | None = None,
) -> list[float]:
    """The ``torch_tuned`` loop: each epoch ``step`` on index slices of a fresh ``randperm`` of
    ``x_all`` (the ragged batch dropped), its outputs (of shape ``totals``) summed on the device
    and read once; returns the seconds of each epoch. ``on_epoch_means`` receives the last
    epoch's mean outputs."""
    import torch

    device = x_all.device
    steps = len(x_all) // batch_size
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        if before_epoch is not None:
            before_epoch()
        order = torch.randperm(len(x_all), device=device)
        total = torch.zeros(totals, device=device)
        for i in range(steps):
            total += step(x_all[order[i * batch_size : (i + 1) * batch_size]])
        if on_epoch_means is None:
            float(total)
        else:
            on_epoch_means[:] = (total / steps).tolist()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def _vae_step(net, optimizer, loss_fn: Callable) -> Callable:
    """One ``torch_tuned`` VAE update on a batch; returns the loss, detached (no host sync)."""

    def step(x):
        optimizer.zero_grad(set_to_none=True)
        outputs, mean, log_var = net(x)
        loss = loss_fn(outputs, x, mean, log_var)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _example_epochs(
    net, optimizer, train: np.ndarray, *, batch_size: int, epochs: int, device
) -> tuple[list[float], int]:
    """``torch_example``: pytorch/examples' loop over a ``DataLoader`` of PIL-made items,
    ``loss.item()`` every step; returns (seconds per epoch, images per epoch)."""
    import torch

    from experiments.benchmarking.torch_reference import example_loss

    loader = torch.utils.data.DataLoader(
        _PILMnist(train),
        batch_size=batch_size,
        shuffle=True,
        **({"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}),
    )
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        net.train()
        train_loss = 0.0
        for x, _ in loader:
            x = x.to(device)
            optimizer.zero_grad()
            probs, mean, log_var = net(x)
            loss = example_loss(probs, x, mean, log_var)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds, len(train)


def _gan_step(generator, discriminator, noise_dim: int, device) -> Callable:
    """One DCGAN update on a real batch (see :func:`run_torch_gan`), each player with its own
    Adam; returns [d_loss, g_loss, D(x), D(G(z))] on the device."""
    import torch

    from experiments.benchmarking.torch_dcgan import (
        dcgan_discriminator_loss,
        dcgan_generator_loss,
    )

    settings = SETTINGS["dcgan"]

    def adam(module):
        return torch.optim.Adam(
            module.parameters(), lr=settings["learning_rate"], betas=settings["betas"]
        )

    g_optimizer, d_optimizer = adam(generator), adam(discriminator)
    g_params = list(generator.parameters())

    def step(real):
        n = len(real)
        with torch.no_grad():
            fake = generator(torch.randn(n, noise_dim, device=device))
        d_optimizer.zero_grad(set_to_none=True)
        real_logits, fake_logits = discriminator(real), discriminator(fake)
        d_loss = dcgan_discriminator_loss(real_logits, fake_logits)
        d_loss.backward()
        d_optimizer.step()
        g_optimizer.zero_grad(set_to_none=True)
        g_loss = dcgan_generator_loss(
            discriminator(generator(torch.randn(n, noise_dim, device=device)))
        )
        g_loss.backward(inputs=g_params)
        g_optimizer.step()
        return torch.stack(
            [
                d_loss.detach(),
                g_loss.detach(),
                torch.sigmoid(real_logits.detach()).mean(),
                torch.sigmoid(fake_logits.detach()).mean(),
            ]
        )

    return step


def _torch_compiled(step: Callable, extra: dict[str, Any]) -> Callable:
    """``torch.compile(step)``, noting in ``extra['torch_compile']`` whether it worked."""
    import torch

    try:
        compiled = torch.compile(step)
    except Exception as e:  # pragma: no cover - depends on the toolchain
        extra["torch_compile"] = f"failed: {type(e).__name__}"
        return step
    extra["torch_compile"] = True
    return compiled


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


def _torch_images(images: np.ndarray, model: str, device):
    """uint8 [N, 28, 28, 1] -> float [N, 784] (mlp) or zero-padded [N, 1, 32, 32] (conv)."""
    import torch

    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    if model == "mlp":
        return x.reshape(len(images), -1).to(device)
    return torch.nn.functional.pad(x.permute(0, 3, 1, 2), (2, 2, 2, 2)).to(device)


def _torch_gan_images(images: np.ndarray, image_size: int, device):
    """uint8 [N, 28, 28, 1] -> float [N, 1, S, S] in [-1, 1] (zero-padded, i.e. -1, to S)."""
    import torch

    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    pad = (image_size - x.shape[-1]) // 2
    if pad:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    return (x * 2.0 - 1.0).contiguous().to(device)


def _torch_loss(model: str):
    """The summed loss of ``model``'s outputs: the example's, or Foster's (beta 2.048, logits)."""
    import functools

    from experiments.benchmarking.torch_reference import example_loss, foster_loss

    if model == "mlp":
        return example_loss
    return functools.partial(foster_loss, beta=SETTINGS["conv"]["beta"])


def _torch_test_loss(net, test: np.ndarray, model: str, device) -> float:
    import torch

    net.eval()
    loss_fn = _torch_loss(model)
    total = 0.0
    with torch.no_grad():
        for x in torch.split(_torch_images(test, model, device), 1000):
            outputs, mean, log_var = net(x)
            total += float(loss_fn(outputs, x, mean, log_var))
    return total / len(test)
