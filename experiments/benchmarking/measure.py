"""Throughput of vaejax's models against PyTorch versions of them, on the same data and machine.

The models: ``mlp``, the pytorch/examples VAE, ``conv``, Foster's conv VAE (its experiment's
settings: Adam 5e-4, epsilon 1e-7, beta 2.048; there is no "PyTorch example" of it, so its
baseline is ``torch_tuned``), and ``dcgan``, the DCGAN of pytorch/examples ``dcgan/main.py``
(see below). What follows describes the MLP; the conv model runs the same variants except
``torch_example``.

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

``dcgan`` (:func:`run_jax_gan`, :func:`run_torch_gan`) trains :func:`vaejax.models.dcgan` and its
PyTorch twin (:class:`~vaejax.torch_reference.DCGANGenerator`,
:class:`~vaejax.torch_reference.DCGANDiscriminator`) on MNIST scaled to [-1, 1] (28 x 28, or
zero-padded to 32 x 32): Adam 2e-4, betas (0.5, 0.999) for both players, batch 64 by default. One
update is a discriminator step (binary cross-entropy on the logits of the real batch and of
fakes from fresh z) then a generator step (non-saturating loss, fresh z): the ``torch_tuned``
loop does in PyTorch what :func:`vaejax.gan.make_gan_update` does (fakes for the
discriminator made without a graph, no discriminator weight gradients in the generator's step),
and ``jax_step`` / ``jax_epoch`` run that update as for the VAEs. It reports real images per
second and, instead of a test loss, the last epoch's mean losses and D(x), D(G(z)) (the same
game in both frameworks should end near the same values); FLOPs:
:func:`dcgan_train_flops`. There is no ``torch_example`` variant.
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any, Callable

import numpy as np

VARIANTS = ("torch_example", "torch_tuned", "jax_step", "jax_epoch")
MODELS = ("mlp", "conv", "dcgan")
# the experiments' settings: pytorch/examples for the MLP and the DCGAN, Foster's for the conv VAE
SETTINGS = {"mlp": {"size": 28, "learning_rate": 1e-3, "adam_eps": 1e-8, "beta": 1.0},
            "conv": {"size": 32, "learning_rate": 5e-4, "adam_eps": 1e-7, "beta": 1024 / 500},
            "dcgan": {"noise_dim": 100, "learning_rate": 2e-4, "betas": (0.5, 0.999)}}


def mlp_vae_train_flops(pixels: int = 784, hidden: int = 400, latent: int = 20) -> int:
    """FLOPs per image of one training step of the MLP VAE (multiply-adds count 2).

    Forward: the five matrix products, M = pixels*hidden + 2*hidden*latent + latent*hidden +
    hidden*pixels multiply-adds. Backward: the gradients of the weights (M) and of each layer's
    input (M, less the first layer's, pixels*hidden, which nothing needs). Elementwise work
    (activations, the loss, Adam) is left out: it is O(parameters + pixels), under 1% here.
    """
    macs = pixels * hidden + 2 * hidden * latent + latent * hidden + hidden * pixels
    return 2 * (3 * macs - pixels * hidden)


def conv_vae_train_flops(size: int = 32, channels=(32, 64, 128), latent: int = 2) -> int:
    """FLOPs per image of one training step of Foster's conv VAE (3x3 kernels, stride 2).

    Counts the multiply-adds that touch data, as XLA's cost analysis does: along each axis a
    'same' conv with ``out`` outputs uses ``out * 3 - pad`` kernel taps (``pad`` the zero
    padding), a stride-2 transposed conv from ``n`` inputs ``3 * n - 1`` (one tap falls on the
    cropped row). Forward M = 13.28 M multiply-adds for the default model (14.54 M counting the
    taps on padding). Backward: 2M, less the first conv's input gradient.
    """
    def conv_taps(size_in: int, stride: int) -> int:
        out = -(-size_in // stride)
        pad = max((out - 1) * stride + 3 - size_in, 0)
        return out * 3 - pad

    widths = (1, *channels)
    macs, side, first = 0, size, None
    for c_in, c_out in zip(widths[:-1], widths[1:]):  # encoder convs, stride 2
        layer = conv_taps(side, 2) ** 2 * c_in * c_out
        first = layer if first is None else first
        macs += layer
        side = -(-side // 2)
    flat = side * side * channels[-1]
    macs += 2 * flat * latent + latent * flat  # the two heads, the decoder's dense layer
    back = (channels[-1], *reversed(channels))
    for c_in, c_out in zip(back[:-1], back[1:]):  # transposed convs, stride 2
        macs += (3 * side - 1) ** 2 * c_in * c_out
        side *= 2
    macs += conv_taps(side, 1) ** 2 * channels[0]  # the output conv, stride 1
    return 2 * (3 * macs - first)


def dcgan_forward_macs(image_size: int = 28, channels: int = 1, width: int = 64,
                       noise_dim: int = 100) -> dict[str, int]:
    """Multiply-adds per image of the DCGAN's forward passes, counting the kernel taps that touch
    data (as XLA's cost analysis does; zero padding and the holes of transposed convolutions do
    not count): ``generator``, ``discriminator``, and the two layers whose input gradient no
    training step needs, ``projection`` (z -> the start map) and ``first_conv`` (the image).

    Along each axis a 4x4 stride-2 convolution (padding 1) from ``n`` pixels has 2n - 2 taps on
    data, a 4x4 stride-2 transposed convolution from ``n`` pixels 4n - 2.
    """
    from vaejax.models.gan import layout  # flax: imported only when a DCGAN is counted

    start, layers = layout(image_size)
    generator_widths = [width * 2 ** (layers - 1 - i) for i in range(layers)] + [channels]
    projection = noise_dim * start * start * generator_widths[0]
    generator, side = projection, start
    for c_in, c_out in zip(generator_widths[:-1], generator_widths[1:]):
        generator += (4 * side - 2) ** 2 * c_in * c_out
        side *= 2
    discriminator_widths = [channels] + [width * 2 ** i for i in range(layers)]
    first_conv, discriminator, side = None, 0, image_size
    for c_in, c_out in zip(discriminator_widths[:-1], discriminator_widths[1:]):
        layer = (2 * side - 2) ** 2 * c_in * c_out
        first_conv = layer if first_conv is None else first_conv
        discriminator += layer
        side //= 2
    discriminator += start * start * discriminator_widths[-1]  # the logit
    return {"generator": generator, "discriminator": discriminator, "projection": projection,
            "first_conv": first_conv}


def dcgan_train_flops(image_size: int = 28, channels: int = 1, width: int = 64,
                      noise_dim: int = 100) -> int:
    """FLOPs per real image of one DCGAN update (a discriminator step and a generator step on
    batches of the same size; multiply-adds count 2), from :func:`dcgan_forward_macs` G, D:

    - discriminator step: G forward for the fakes; D forward on the real and the fake batch,
      and its backward on both: weight gradients (D each) and input gradients (D less the
      first conv's: nothing needs the images' gradient): G + 6D - 2 first_conv;
    - generator step: G and D forward on fresh fakes; D backward for its input gradients only
      (its weights are not trained here), G backward: weight gradients (G) and input gradients
      less the projection's (z needs none): 3G + 2D - projection.

    Elementwise work (batch norm, activations, the losses, Adam) is left out: XLA's cost
    analysis counts 1.2% more at width 64 (0.6% at 128; a test checks). 140.5 MFLOP per real
    image for the default model (28 x 28, width 64), 338.5 M at 32 x 32.
    """
    m = dcgan_forward_macs(image_size, channels, width, noise_dim)
    g, d = m["generator"], m["discriminator"]
    return 2 * (4 * g + 8 * d - 2 * m["first_conv"] - m["projection"])


def train_flops(model: str, *, image_size: int = 28, width: int = 64) -> int:
    """FLOPs per image of a training step of ``model``; ``image_size`` and ``width`` are the
    DCGAN's (the VAEs have one size each)."""
    if model == "dcgan":
        return dcgan_train_flops(image_size, 1, width, SETTINGS["dcgan"]["noise_dim"])
    return mlp_vae_train_flops() if model == "mlp" else conv_vae_train_flops()


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


def _summary(epoch_seconds: list[float], images_per_epoch: int, test_loss: float | None,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The result of a run; ``test_loss`` None (the GAN, which has none) leaves it out."""
    warm = epoch_seconds[1:] or epoch_seconds
    loss = {} if test_loss is None else {"test_negative_elbo": test_loss}
    return {"images_per_second": images_per_epoch / statistics.median(warm),
            "first_epoch_seconds": epoch_seconds[0], "epoch_seconds": epoch_seconds,
            **loss, "peak_host_mib": peak_host_mib(), **(extra or {})}


# ---------------------------------------------------------------------------------------------
# vaejax


def run_jax(variant: str, train: np.ndarray, test: np.ndarray, *, batch_size: int, epochs: int,
            seed: int = 1, model: str = "mlp") -> dict[str, Any]:
    """``jax_step`` or ``jax_epoch`` on uint8 images [N, 28, 28, 1]; all devices."""
    import jax
    import jax.numpy as jnp
    import optax

    from vaejax import data, models, objectives, training

    mesh = training.data_mesh()
    settings = SETTINGS[model]
    size = settings["size"]
    vae = models.mlp_vae() if model == "mlp" else models.conv_vae()
    init_key, data_key, step_key, eval_key = (
        jax.random.fold_in(jax.random.key(seed), i) for i in range(4))
    params = vae.init(init_key, jnp.zeros((1, size, size, 1)), init_key)["params"]
    optimizer = optax.adam(settings["learning_rate"], eps=settings["adam_eps"])
    per_example = objectives.vae_per_example(vae, beta=settings["beta"])
    update = training.gradient_update(objectives.batch_mean(per_example), optimizer)
    preprocess = data.make_batch_preprocessor(size)
    state = training.put_replicated(training.create_train_state(params, optimizer), mesh)
    state, seconds, _ = _jax_epochs(variant, update, preprocess, state, train, mesh,
                                    batch_size=batch_size, epochs=epochs, data_key=data_key,
                                    step_key=step_key)
    evaluate = training.make_evaluator(per_example, preprocess, batch_size=1000, mesh=mesh)
    test_loss = float(evaluate(state.params, training.put_replicated(test, mesh), eval_key)["loss"])
    steps = len(train) // batch_size
    return _summary(seconds, steps * batch_size, test_loss, _jax_extra(mesh))


def _jax_epochs(variant: str, update, preprocess, state, train: np.ndarray, mesh, *,
                batch_size: int, epochs: int, data_key, step_key):
    """Trains ``epochs`` epochs of ``variant``; returns (state, seconds per epoch, the last
    epoch's per-step metrics as [steps] arrays, on the device)."""
    import jax
    import jax.numpy as jnp

    from vaejax import training

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
            epoch_metrics = []
            for i in range(steps):
                batch = train[order[i * batch_size:(i + 1) * batch_size]]
                state, step_metrics = train_step(state, batch, step_key, epoch * steps + i)
                epoch_metrics.append(step_metrics)
            jax.block_until_ready(state)
            seconds.append(time.perf_counter() - start)
        metrics = jax.tree_util.tree_map(lambda *values: jnp.stack(values), *epoch_metrics)
    else:
        raise ValueError(f"unknown jax variant {variant!r}")
    return state, seconds, metrics


def _jax_extra(mesh) -> dict[str, Any]:
    import jax

    extra = {"devices": mesh.size, "platform": jax.devices()[0].platform}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        extra["peak_device_mib"] = stats["peak_bytes_in_use"] / 2**20
    return extra


GAN_METRICS = ("d_loss", "g_loss", "d_real", "d_fake")


def run_jax_gan(variant: str, train: np.ndarray, *, batch_size: int, epochs: int, seed: int = 1,
                image_size: int = 28, width: int = 64) -> dict[str, Any]:
    """``jax_step`` or ``jax_epoch`` of the DCGAN (:func:`vaejax.gan.make_gan_update`, BCE game,
    non-saturating generator, one discriminator step per generator step) on uint8 images
    [N, 28, 28, 1]; all devices. Reports the last epoch's means of :data:`GAN_METRICS`."""
    import jax
    import optax

    from vaejax import data, models, training
    from vaejax.training import gan as gan_training

    mesh = training.data_mesh()
    settings = SETTINGS["dcgan"]
    model = models.dcgan(image_size, 1, width, settings["noise_dim"])
    data_key, step_key = (jax.random.fold_in(jax.random.key(seed), i) for i in range(1, 3))
    # the initial weights through the "rbg" generator: XLA compiles the init's threefry
    # draws for 20 s on a 2-core CPU (rbg: 4 s); not timed either way, and the same
    # distributions; the training steps draw their noise with threefry keys, as experiments do
    params = jax.jit(model.init)(jax.random.key(seed, impl="rbg"))
    beta1, beta2 = settings["betas"]
    optimizer = optax.adam(settings["learning_rate"], b1=beta1, b2=beta2)
    update = gan_training.make_gan_update(model, loss="bce", generator_optimizer=optimizer,
                                 discriminator_optimizer=optimizer)
    preprocess = data.to_tanh_range(data.make_batch_preprocessor(image_size))
    state = training.put_replicated(gan_training.create_gan_state(params, optimizer, optimizer), mesh)
    state, seconds, metrics = _jax_epochs(variant, update, preprocess, state, train, mesh,
                                          batch_size=batch_size, epochs=epochs,
                                          data_key=data_key, step_key=step_key)
    means = training.mean_metrics({k: metrics[k] for k in GAN_METRICS})
    return _summary(seconds, len(train) // batch_size * batch_size, None,
                    {**_jax_extra(mesh), **means})


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


def _torch_images(images: np.ndarray, model: str, device):
    """uint8 [N, 28, 28, 1] -> float [N, 784] (mlp) or zero-padded [N, 1, 32, 32] (conv)."""
    import torch

    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    if model == "mlp":
        return x.reshape(len(images), -1).to(device)
    return torch.nn.functional.pad(x.permute(0, 3, 1, 2), (2, 2, 2, 2)).to(device)


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


def run_torch(variant: str, train: np.ndarray, test: np.ndarray, *, batch_size: int,
              epochs: int, seed: int = 1, compile_model: bool = False,
              model: str = "mlp") -> dict[str, Any]:
    """``torch_example`` (mlp only) or ``torch_tuned`` on uint8 images [N, 28, 28, 1]; CUDA if
    present."""
    import torch

    from experiments.benchmarking.torch_reference import (
        ExampleMLPVAE,
        FosterConvVAE,
        example_loss,
    )

    if model == "conv" and variant == "torch_example":
        raise ValueError("torch_example is the pytorch/examples MLP; the conv model has "
                         "torch_tuned")
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = (ExampleMLPVAE() if model == "mlp" else FosterConvVAE()).to(device)
    settings = SETTINGS[model]
    optimizer = torch.optim.Adam(net.parameters(), lr=settings["learning_rate"],
                                 eps=settings["adam_eps"])
    extra: dict[str, Any] = {"platform": device.type, "torch_threads": torch.get_num_threads()}
    loss_fn = _torch_loss(model)

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
            sync()
            seconds.append(time.perf_counter() - start)
    elif variant == "torch_tuned":
        x_all = _torch_images(train, model, device)
        steps = len(train) // batch_size
        images_per_epoch = steps * batch_size

        def step(x):
            optimizer.zero_grad(set_to_none=True)
            outputs, mean, log_var = net(x)
            loss = loss_fn(outputs, x, mean, log_var)
            loss.backward()
            optimizer.step()
            return loss.detach()

        if compile_model:
            step = _torch_compiled(step, extra)
        for _ in range(epochs):
            start = time.perf_counter()
            net.train()
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
    return _summary(seconds, images_per_epoch, _torch_test_loss(net, test, model, device), extra)


def _torch_gan_images(images: np.ndarray, image_size: int, device):
    """uint8 [N, 28, 28, 1] -> float [N, 1, S, S] in [-1, 1] (zero-padded, i.e. -1, to S)."""
    import torch

    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    pad = (image_size - x.shape[-1]) // 2
    if pad:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    return (x * 2.0 - 1.0).contiguous().to(device)


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


def run_torch_gan(variant: str, train: np.ndarray, *, batch_size: int, epochs: int,
                  seed: int = 1, compile_model: bool = False, image_size: int = 28,
                  width: int = 64) -> dict[str, Any]:
    """``torch_tuned`` DCGAN training on uint8 images [N, 28, 28, 1]; CUDA if present.

    The training set is one tensor in [-1, 1] on the device, batches are index slices of a
    ``randperm`` (the ragged batch dropped), no per-step host sync (the losses are summed on the
    device and read once an epoch). One update, as :func:`vaejax.gan.make_gan_update`'s: fakes
    from fresh z made without a graph; a discriminator step on BCE-with-logits of the real batch
    (label 1) and the fakes (label 0), each through the discriminator on its own (batch norm on
    each batch's statistics, as pytorch/examples does); a generator step on fresh fakes with the
    non-saturating loss, ``backward(inputs=generator parameters)`` so no discriminator weight
    gradient is computed. With ``compile_model`` the update goes through ``torch.compile``.
    """
    import torch

    from experiments.benchmarking.torch_reference import (
        DCGANDiscriminator,
        DCGANGenerator,
        dcgan_discriminator_loss,
        dcgan_generator_loss,
    )

    if variant != "torch_tuned":
        raise ValueError(f"the dcgan model's PyTorch variant is torch_tuned, not {variant!r}")
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = SETTINGS["dcgan"]
    noise_dim = settings["noise_dim"]
    generator = DCGANGenerator(image_size, 1, width, noise_dim).to(device).train()
    discriminator = DCGANDiscriminator(image_size, 1, width).to(device).train()
    adam = lambda module: torch.optim.Adam(module.parameters(), lr=settings["learning_rate"],
                                           betas=settings["betas"])
    g_optimizer, d_optimizer = adam(generator), adam(discriminator)
    g_params = list(generator.parameters())
    extra: dict[str, Any] = {"platform": device.type, "torch_threads": torch.get_num_threads()}

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
        g_loss = dcgan_generator_loss(discriminator(generator(
            torch.randn(n, noise_dim, device=device))))
        g_loss.backward(inputs=g_params)
        g_optimizer.step()
        return torch.stack([d_loss.detach(), g_loss.detach(),
                            torch.sigmoid(real_logits.detach()).mean(),
                            torch.sigmoid(fake_logits.detach()).mean()])

    if compile_model:
        step = _torch_compiled(step, extra)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    x_all = _torch_gan_images(train, image_size, device)
    steps = len(train) // batch_size
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(train), device=device)
        total = torch.zeros(len(GAN_METRICS), device=device)
        for i in range(steps):
            total += step(x_all[order[i * batch_size:(i + 1) * batch_size]])
        means = (total / steps).tolist()
        sync()
        seconds.append(time.perf_counter() - start)
    if device.type == "cuda":
        extra["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return _summary(seconds, steps * batch_size, None, {**extra, **dict(zip(GAN_METRICS, means))})


def run_variant(variant: str, train: np.ndarray, test: np.ndarray, **kwargs) -> dict[str, Any]:
    """Runs ``variant`` of ``kwargs['model']`` (default mlp); the dcgan model ignores ``test``
    and takes ``image_size`` and ``width``."""
    model = kwargs.get("model", "mlp")
    if variant.startswith("jax"):
        kwargs.pop("compile_model", None)
    if model == "dcgan":
        kwargs.pop("model")
        runner: Callable = run_jax_gan if variant.startswith("jax") else run_torch_gan
        return {"variant": variant, "model": model, **runner(variant, train, **kwargs)}
    runner = run_jax if variant.startswith("jax") else run_torch
    return {"variant": variant, "model": model, **runner(variant, train, test, **kwargs)}
