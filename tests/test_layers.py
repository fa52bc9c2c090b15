"""The convolution layers equal flax's, in outputs, gradients and second derivatives."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax import models

CASES = [(3, 2, 8), (3, 2, 5), (3, 1, 7), (4, 2, 6), (5, 3, 4)]


def _pair(transpose: bool, kernel_size: int, stride: int, implementation: str):
    ours = (models.ConvTranspose2D if transpose else models.Conv2D)(
        4,
        kernel_size,
        stride=stride,
        implementation=implementation,
        bias_init=nn.initializers.normal(1.0),
    )
    theirs = (nn.ConvTranspose if transpose else nn.Conv)(
        4, (kernel_size, kernel_size), strides=(stride, stride), padding="SAME"
    )
    return ours, theirs


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("implementation", ["xla", "matmul_grad"])
@pytest.mark.parametrize("kernel_size,stride,size", CASES)
def test_same_function_and_gradients_as_flax(transpose, implementation, kernel_size, stride, size):
    ours, theirs = _pair(transpose, kernel_size, stride, implementation)
    x = jax.random.normal(jax.random.key(0), (2, size, size + 1, 3))
    params = ours.init(jax.random.key(1), x)["params"]
    assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(
        jnp.shape, theirs.init(jax.random.key(1), x)["params"]
    )
    np.testing.assert_allclose(
        ours.apply({"params": params}, x), theirs.apply({"params": params}, x), rtol=1e-5, atol=1e-5
    )

    def loss(module):
        return lambda p, x: jnp.sum(jnp.sin(module.apply({"params": p}, x)))

    for a, b in zip(
        jax.tree_util.tree_leaves(jax.grad(loss(ours), (0, 1))(params, x)),
        jax.tree_util.tree_leaves(jax.grad(loss(theirs), (0, 1))(params, x)),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("transpose", [False, True])
def test_second_derivatives_match(transpose):
    """Gradient penalties differentiate a gradient: the custom backward pass must allow it."""
    ours, theirs = _pair(transpose, 3, 2, "matmul_grad")
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    params = ours.init(jax.random.key(1), x)["params"]

    def penalty(module):
        def input_grad_norm(p, x):
            g = jax.grad(lambda x: jnp.sum(jnp.tanh(module.apply({"params": p}, x))))(x)
            return jnp.sum(g**2)

        return jax.grad(input_grad_norm)

    for a, b in zip(
        jax.tree_util.tree_leaves(penalty(ours)(params, x)),
        jax.tree_util.tree_leaves(penalty(theirs)(params, x)),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_auto_and_unknown_implementation():
    expected = "matmul_grad" if jax.default_backend() == "cpu" else "xla"
    assert models.resolve_implementation("auto") == expected
    with pytest.raises(ValueError, match="unknown convolution implementation"):
        models.resolve_implementation("winograd")
