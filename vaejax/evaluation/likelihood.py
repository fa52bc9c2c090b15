"""Evaluating a VAE's likelihood: the K-sample bounds over a dataset."""

from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from vaejax.objectives.likelihood import vae_bound


def evaluate_bounds(
    model,
    params,
    images: np.ndarray,
    preprocess: Callable,
    key: jax.Array,
    num_samples: int,
    batch_size: int = 100,
    chunk_size: int = 100,
    likelihood: str = "bernoulli",
    variance: float = 1.0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """L_K and the K-sample ELBO of every image of ``images`` (uint8, host): ``{"iwae": [N],
    "elbo": [N]}`` float64 on the host. Batch ``b`` uses ``fold_in(key, b)``; shows a progress
    bar with images/second when ``progress``."""

    @jax.jit
    def batch_bounds(params, raw, batch_key):
        return vae_bound(
            model,
            params,
            preprocess(raw, None),
            batch_key,
            num_samples,
            chunk_size,
            likelihood,
            variance,
        )

    out = {"iwae": [], "elbo": []}
    start = time.perf_counter()
    with tqdm(
        total=len(images),
        desc=f"L_{num_samples}",
        unit="img",
        dynamic_ncols=True,
        **({} if progress else {"disable": True}),  # TQDM_DISABLE=1 also hides it
    ) as bar:
        for b, i in enumerate(range(0, len(images), batch_size)):
            bounds = batch_bounds(params, images[i : i + batch_size], jax.random.fold_in(key, b))
            for name in out:
                out[name].append(np.asarray(bounds[name], np.float64))
            bar.update(len(out["iwae"][-1]))
            bar.set_postfix(img_s=f"{bar.n / (time.perf_counter() - start):,.1f}")
    return {name: np.concatenate(values) for name, values in out.items()}
