"""What experiments write: image grids (PNG), metrics (JSON lines), parameters (msgpack), plots.

Every local file is written to a temporary name first and renamed into place, so an interrupted
run never leaves half a file under the final name. Paths with a scheme (``gs://bucket/run``,
``s3://...``) go through ``etils.epath`` (:func:`as_path`), whose object stores write each
object whole; a JSON-lines file there is rewritten with its new line (an object cannot be
appended to).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import PIL.Image
from etils import epath
from flax import serialization


def as_path(path: os.PathLike | str):
    """``path`` as a ``pathlib.Path``, or, when it has a scheme (``gs://``, ``s3://``, ...), as an
    ``etils.epath.Path`` (needs the file system's package, e.g. gcsfs, and credentials)."""
    if isinstance(path, Path) or "://" not in os.fspath(path):
        return Path(path)
    return epath.Path(path)


def object_store_fix(flag: str) -> str:
    """What to do when an object store cannot be reached, for the flag that named it."""
    return (
        f"for gs:// install gcsfs (pip install gcsfs) and sign in (gcloud auth "
        f"application-default login), or pass a local {flag}"
    )


def is_local(path) -> bool:
    return isinstance(as_path(path), Path)


def atomic_write_bytes(path: os.PathLike | str, payload: bytes) -> Path:
    path = as_path(path)
    if not is_local(path):
        path.write_bytes(payload)  # an object store writes the object whole or not at all
        return path
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def image_grid(
    images: np.ndarray, columns: int, padding: int = 2, pad_value: float = 1.0
) -> np.ndarray:
    """Tiles images [N, H, W, C] with values in [0, 1] into one uint8 array [rows*(H+p)+p, ...].

    Rows are filled left to right; a short last row is padded with ``pad_value``.
    """
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    if images.ndim != 4:
        raise ValueError(f"image_grid needs [N, H, W, C] images, got shape {images.shape}")
    n, h, w, c = images.shape
    rows = -(-n // columns)
    grid = np.full(
        (rows * (h + padding) + padding, columns * (w + padding) + padding, c),
        pad_value,
        np.float32,
    )
    for i, image in enumerate(images):
        top = padding + (i // columns) * (h + padding)
        left = padding + (i % columns) * (w + padding)
        grid[top : top + h, left : left + w] = image
    grid = np.round(grid * 255.0).astype(np.uint8)
    return grid[..., 0] if c == 1 else grid


def save_image_grid(
    path: os.PathLike | str, images: np.ndarray, columns: int, scale: int = 2
) -> Path:
    """Writes :func:`image_grid` as a PNG, each pixel enlarged ``scale`` times."""
    return _save_png(path, image_grid(images, columns), scale)


def save_image_grids(
    path: os.PathLike | str, grids: Sequence[tuple[np.ndarray, int]], gap: int = 12, scale: int = 2
) -> Path:
    """Several :func:`image_grid` s side by side, ``gap`` white pixels apart, as one PNG: one
    ``(images [N, H, W, C], columns)`` per grid (for comparisons: AE | VAE). Shorter grids are
    padded with white at the bottom."""
    tiles = [image_grid(images, columns) for images, columns in grids]
    height = max(t.shape[0] for t in tiles)
    parts = []
    for i, tile in enumerate(tiles):
        pad = [(0, height - tile.shape[0]), (0, gap if i < len(tiles) - 1 else 0)]
        parts.append(np.pad(tile, pad + [(0, 0)] * (tile.ndim - 2), constant_values=255))
    return _save_png(path, np.concatenate(parts, axis=1), scale)


def _save_png(path: os.PathLike | str, pixels: np.ndarray, scale: int) -> Path:
    picture = PIL.Image.fromarray(pixels)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), PIL.Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def jsonl_line(record: dict[str, Any]) -> str:
    """One JSON object as one line of a JSON-lines file (keys sorted)."""
    return json.dumps(record, sort_keys=True) + "\n"


def append_jsonl(path: os.PathLike | str, record: dict[str, Any]) -> None:
    """Appends one JSON object as one line (flushed, so a crash keeps every finished line)."""
    path = as_path(path)
    if not is_local(path):
        before = path.read_text(encoding="utf-8") if path.exists() else ""
        path.write_text(before + jsonl_line(record), encoding="utf-8")
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(jsonl_line(record))
        f.flush()


def read_jsonl(path: os.PathLike | str) -> list[dict[str, Any]]:
    with as_path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def save_params(path: os.PathLike | str, params) -> Path:
    """Writes a parameter pytree with flax's msgpack serialization."""
    return atomic_write_bytes(path, serialization.to_bytes(params))


def load_params(path: os.PathLike | str, target):
    """Reads parameters saved by :func:`save_params` into the structure of ``target``."""
    return serialization.from_bytes(target, as_path(path).read_bytes())


def save_latent_scatter(
    path: os.PathLike | str,
    z: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    title: str = "",
) -> Path:
    """Scatter of 2-D codes [N, 2] coloured by label, with a legend of class names (PNG)."""
    return save_latent_scatters(path, [(z, title)], labels, class_names)


def save_latent_scatters(
    path: os.PathLike | str,
    panels: Sequence[tuple[np.ndarray, str]],
    labels: np.ndarray,
    class_names: Sequence[str],
    axis_labels: tuple[str, str] = ("z[0]", "z[1]"),
    limits: tuple[float, float] | None = None,
) -> Path:
    """Side-by-side scatters of 2-D codes, one panel per ``(z [N, 2], title)``, each point
    coloured by its label [N], one legend of class names (PNG). ``limits``: the same (low,
    high) on both axes of every panel (e.g. (0, 1) for p-values)."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6 * len(panels) + 1, 6), dpi=100, squeeze=False
    )
    cmap = plt.get_cmap("tab10")
    for ax, (z, title) in zip(axes[0], panels):
        if not class_names:  # data without classes (CelebA): one colour, no legend
            ax.scatter(z[:, 0], z[:, 1], s=2, alpha=0.6, color=cmap(0))
        for k, name in enumerate(class_names):
            chosen = labels == k
            ax.scatter(z[chosen, 0], z[chosen, 1], s=2, alpha=0.6, color=cmap(k % 10), label=name)
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
        ax.set_title(title)
        if limits is not None:
            ax.set_xlim(*limits)
            ax.set_ylim(*limits)
    if class_names:
        axes[0, -1].legend(markerscale=5, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save_figure(path, fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(path: os.PathLike | str, fig) -> Path:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    _pyplot().close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def save_class_histograms(
    path: os.PathLike | str, rows: Sequence[tuple[str, Sequence[int]]]
) -> Path:
    """One bar chart per ``(title, counts per class)``, stacked, each bar the share of the
    images (PNG): the class histogram of generated images, where mode collapse shows."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(7, 1.8 * len(rows) + 0.5), dpi=100, squeeze=False, sharex=True
    )
    for ax, (title, counts) in zip(axes[:, 0], rows):
        counts = np.asarray(counts, dtype=np.float64)
        ax.bar(np.arange(len(counts)), counts / max(counts.sum(), 1), color="tab:blue")
        ax.axhline(1 / len(counts), color="grey", linewidth=0.8, linestyle="--")
        ax.set_ylabel("share")
        ax.set_title(title, fontsize=9)
    axes[-1, 0].set_xticks(np.arange(len(rows[0][1])))
    axes[-1, 0].set_xlabel("class (the classifier's label)")
    return _save_figure(path, fig)
