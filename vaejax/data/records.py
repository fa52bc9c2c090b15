"""A prepared split read record by record: random access to decoded examples, for readers that
stream (:mod:`vaejax.training.stream`) rather than hold a split in memory.

``RecordSource(name, split, data_dir)[i]`` reads record ``i`` (``__getitems__(rows)`` several
records at once) of a dataset prepared in the tfds
layout (any of :mod:`vaejax.data.catalog`'s names) with ``tfds.data_source``, the image left
encoded, and decodes it with PIL in the calling thread (PIL releases the GIL while it decodes, so
several reader threads decode in parallel): ``{"image": uint8 [H, W, C], "label": int32}``.
"""

from __future__ import annotations

import os

import numpy as np

from vaejax.data.images import image_array


class RecordSource:
    """Random access to the decoded records of one prepared split (see the module)."""

    def __init__(self, name: str, split: str, data_dir: os.PathLike | str):
        import tensorflow_datasets as tfds

        self.source = tfds.data_source(
            name,
            split=split,
            data_dir=os.fspath(data_dir),
            download=False,
            decoders={"image": tfds.decode.SkipDecoding()},
        )

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return _decoded(self.source[int(i)])

    def __getitems__(self, rows) -> list[dict[str, np.ndarray]]:
        """Records ``rows`` in one read of the files (several times faster than one by one)."""
        return [_decoded(record) for record in self.source.__getitems__([int(i) for i in rows])]


def _decoded(record) -> dict[str, np.ndarray]:
    return {"image": image_array(record["image"]), "label": np.int32(record.get("label", 0))}
