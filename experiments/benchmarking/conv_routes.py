"""The routes tried for CPU convolutions, layer by layer: each layer of Foster's conv VAE and of
the DCGAN (batch 100 and 64, float32), the gradient with respect to input and kernel of
sum(conv(x, w)^2), jitted, timed alone and inside a ``fori_loop`` of 20 steps (where XLA's own
backward convolutions slow down: jax #12868). Prints milliseconds per gradient and each route's
largest relative deviation from XLA's. Run: ``python -m experiments.benchmarking.conv_routes``.

Routes for a convolution:

- ``xla``: XLA's forward and backward convolutions;
- ``taps_bwd``: XLA's forward, the backward of the sum over kernel taps of (shifted view) @
  kernel[tap] (vaejax's stride-1 convolutions on CPU);
- ``patches``: im2col, one matrix product forward and two backward (vaejax's strided
  convolutions on CPU);
- ``patches_bwd``: XLA's forward, the im2col product's backward.

For a transposed convolution: ``xla``, ``taps_bwd`` (per output phase; vaejax's on CPU),
``subpixel`` (one product of the patches of the input with a [n*n*C, s*s*O] weight holding each
phase's taps, then depth-to-space: a stride-1 product in place of the stride-s transposed
convolution) and ``subpixel_bwd`` (XLA's forward, the sub-pixel backward).
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from vaejax.models import layers

LAYERS = (  # name, transposed, batch, input side, in channels, out channels, kernel, stride
    ("foster enc1", False, 100, 32, 1, 32, 3, 2),
    ("foster enc2", False, 100, 16, 32, 64, 3, 2),
    ("foster enc3", False, 100, 8, 64, 128, 3, 2),
    ("foster dec1", True, 100, 4, 128, 128, 3, 2),
    ("foster dec2", True, 100, 8, 128, 64, 3, 2),
    ("foster dec3", True, 100, 16, 64, 32, 3, 2),
    ("foster out", False, 100, 32, 32, 1, 3, 1),
    ("dcgan G1", True, 64, 7, 128, 64, 4, 2),
    ("dcgan G2", True, 64, 14, 64, 1, 4, 2),
    ("dcgan D1", False, 64, 28, 1, 64, 4, 2),
    ("dcgan D2", False, 64, 14, 64, 128, 4, 2),
)
LOOP_STEPS = 20


def _subpixel_weights(kernel, stride: int):
    """The transposed convolution's kernel [k, k, C, O] as the matrix [n*n*C, s*s*O] of a
    product with n x n input patches; returns (matrix, lowest input offset, n)."""
    k, _, c, o = kernel.shape
    taps = [layers._transpose_taps(k, stride, phase) for phase in range(stride)]
    offsets = sorted({offset for phase in taps for _, offset in phase})
    low, n = offsets[0], offsets[-1] - offsets[0] + 1
    w = jnp.zeros((n, n, c, stride, stride, o), kernel.dtype)
    for py, taps_y in enumerate(taps):
        for px, taps_x in enumerate(taps):
            for ty, oy in taps_y:
                for tx, ox in taps_x:
                    w = w.at[oy - low, ox - low, :, py, px, :].set(kernel[ty, tx])
    return w.reshape(n * n * c, stride * stride * o), low, n


def conv_transpose_subpixel(x, kernel, stride: int):
    """``lax.conv_transpose(x, kernel, (s, s), 'SAME')`` as one product and depth-to-space."""
    batch, height, width, _ = x.shape
    matrix, low, n = _subpixel_weights(kernel, stride)
    before, after = max(0, -low), max(0, low + n - 1)
    padded = jnp.pad(x, [(0, 0), (before, after), (before, after), (0, 0)])
    start = before + low
    views = [
        padded[:, start + dy : start + dy + height, start + dx : start + dx + width]
        for dy in range(n)
        for dx in range(n)
    ]
    out = jnp.concatenate(views, axis=-1) @ matrix
    out = out.reshape(batch, height, width, stride, stride, -1).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(batch, height * stride, width * stride, -1)


CONV_ROUTES = {
    "xla": layers._xla_conv,
    "taps_bwd": layers.conv_matmul_grad,
    "patches": layers._conv_by_patches,
    "patches_bwd": layers._with_matmul_backward(layers._xla_conv, layers._conv_by_patches),
}
TRANSPOSE_ROUTES = {
    "xla": layers._xla_conv_transpose,
    "taps_bwd": layers.conv_transpose_matmul_grad,
    "subpixel": conv_transpose_subpixel,
    "subpixel_bwd": layers._with_matmul_backward(
        layers._xla_conv_transpose, conv_transpose_subpixel
    ),
}


def _best_ms(f, *args) -> float:
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def measure(op, x, kernel, stride: int):
    """(gradients, ms alone, ms per step inside a loop) of sum(op(x, kernel)^2)."""
    grad = jax.grad(lambda x, w: jnp.sum(op(x, w, stride) ** 2), argnums=(0, 1))

    def loop(x, w):  # each step depends on the last: nothing is hoisted out of the loop
        body = lambda i, g: grad(x + 1e-9 * g[0], w + 1e-9 * g[1])
        return jax.lax.fori_loop(0, LOOP_STEPS, body, (jnp.zeros_like(x), jnp.zeros_like(w)))

    grads = jax.jit(grad)(x, kernel)
    alone = _best_ms(jax.jit(grad), x, kernel)
    return grads, alone, _best_ms(jax.jit(loop), x, kernel) / LOOP_STEPS


def main(argv=None) -> int:
    only = (argv if argv is not None else sys.argv[1:]) or []
    print(f"ms per gradient, alone / inside a loop of {LOOP_STEPS} ({jax.devices()[0].platform})")
    for name, transposed, batch, side, c_in, c_out, k, stride in LAYERS:
        if only and not any(word in name for word in only):
            continue
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(batch, side, side, c_in)), jnp.float32)
        kernel = jnp.asarray(0.1 * rng.normal(size=(k, k, c_in, c_out)), jnp.float32)
        cells, reference = [], None
        for route, op in (TRANSPOSE_ROUTES if transposed else CONV_ROUTES).items():
            grads, alone, looped = measure(op, x, kernel, stride)
            reference = reference or grads
            deviation = max(
                float(jnp.max(jnp.abs(g - r)) / jnp.max(jnp.abs(r)))
                for g, r in zip(grads, reference)
            )
            cells.append(f"{route} {alone:.2f} / {looped:.2f} ({deviation:.0e})")
        print(f"{name:12s} " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
