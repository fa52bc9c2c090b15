"""Mixed precision: a model that computes in bfloat16 while its parameters stay float32.

:func:`compute_in` wraps a flax module (or each module of a bundle such as
:class:`~vaejax.models.gan.GAN`) so that ``apply`` casts the float32 parameters and the floating
inputs to the compute dtype, runs the module, and casts every floating output back to float32.
Parameters, gradients and optimizer state stay float32 (the cast is differentiable: the gradient
of a bfloat16 computation arrives as float32), and losses and metrics are reduced in float32 on
the float32 outputs: the TPU convention. ``init`` is the module's own (float32 parameters).
Integer inputs (labels, timesteps) and PRNG keys pass unchanged.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def cast_floats(tree, dtype):
    """Every floating array of ``tree`` as ``dtype``; anything else unchanged."""

    def cast(leaf):
        if isinstance(leaf, (jax.Array, jnp.ndarray)) and jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(dtype)
        return leaf

    return jax.tree_util.tree_map(cast, tree)


class ComputeIn:
    """``module`` computing in ``dtype`` (see the module docstring); other attributes are the
    module's. Hashable and comparable like the module, so it can be a static jit argument."""

    def __init__(self, module: nn.Module, dtype):
        self.module, self.dtype = module, dtype

    def init(self, *args, **kwargs):
        return self.module.init(*args, **kwargs)

    def apply(self, variables, *args, **kwargs):
        variables = cast_floats(variables, self.dtype)
        args = cast_floats(args, self.dtype)
        out = self.module.apply(variables, *args, **kwargs)
        return cast_floats(out, jnp.float32)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)

    def __hash__(self) -> int:
        return hash((self.module, jnp.dtype(self.dtype).name))

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, ComputeIn)
            and self.module == other.module
            and jnp.dtype(self.dtype) == jnp.dtype(other.dtype)
        )


def compute_in(model, dtype: str):
    """``model`` computing in ``dtype`` ("float32": unchanged; "bfloat16"): a flax module, or a
    NamedTuple bundle whose module fields are wrapped (a GAN's two players, a diffusion model's
    denoiser)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "float32":
        return model
    if isinstance(model, nn.Module):
        return ComputeIn(model, DTYPES[dtype])
    if hasattr(model, "_replace"):
        fields = {
            name: ComputeIn(value, DTYPES[dtype])
            for name, value in zip(model._fields, model)
            if isinstance(value, nn.Module)
        }
        return model._replace(**fields)
    raise TypeError(f"cannot compute {type(model).__name__} in {dtype}: not a flax module")
