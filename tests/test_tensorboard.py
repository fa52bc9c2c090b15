"""TensorBoard event files (``vaejax.training.summaries``), read back with tensorboard's own reader:
every number of a journal at its step, the pictures of each epoch, the config; a rewrite replaces
what was there; a workdir in an object store. That a killed and resumed run's events equal an
uninterrupted run's is checked with every resume in test_faults.py."""

from __future__ import annotations

import io as bytes_io
import json

import numpy as np
import PIL.Image

from tests.helpers import BUCKET, fake_bucket, histogram, read_events
from vaejax import io
from vaejax.training import summaries

JOURNAL = {
    "metrics.jsonl": [
        {"epoch": 0, "step": 0, "test_loss": 3.5, "test_kl": 1, "flag": True, "note": "x"},
        {
            "epoch": 1,
            "step": 12,
            "train_loss": 2.25,
            "test_loss": 2.5,
            "fid": 140.5,
            "class_histogram": [0, 3, 0, 5, 0],
            "per_level": {"psnr": 21.0},
        },
    ],
    "timing.jsonl": [
        {"epoch": 0, "step": 0, "compile_seconds": 1.5},
        {"epoch": 1, "step": 12, "steps": 12, "images_per_second": 900.0},
    ],
}


def _png(value: int) -> bytes:
    buffer = bytes_io.BytesIO()
    PIL.Image.fromarray(np.full((4, 6, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    with PIL.Image.open(bytes_io.BytesIO(png)) as picture:
        return np.asarray(picture)


def _write_pictures(workdir) -> None:
    for name, value in [
        ("sample_1.png", 10),
        ("class_samples_1.png", 20),
        ("sample_11.png", 30),  # epoch 11, not 1
        ("samples_ddpm.png", 40),  # a final picture, of no epoch
    ]:
        (workdir / name).write_bytes(_png(value))


def test_a_journal_becomes_scalars_histograms_pictures_and_the_config(tmp_path):
    _write_pictures(tmp_path)
    log = summaries.EventLog(tmp_path)
    log.rewrite({"seed": 1, "model": "mlp"}, JOURNAL)
    log.close()
    events = read_events(tmp_path)
    assert [(s, t) for s, t, _ in events] == [
        (0, "config/text_summary"),
        (0, "test/loss"),
        (0, "test/kl"),  # booleans and strings are no metrics
        (0, "timing/compile_seconds"),
        (12, "train/loss"),
        (12, "test/loss"),
        (12, "fid"),
        (12, "class_histogram"),
        (12, "per_level/psnr"),
        (12, "class_samples"),
        (12, "sample"),
        (12, "timing/steps"),
        (12, "timing/images_per_second"),
    ]
    values = {(s, t): v for s, t, v in events}
    assert json.loads(values[0, "config/text_summary"]) == {"model": "mlp", "seed": 1}
    assert values[0, "test/loss"] == 3.5 and values[12, "per_level/psnr"] == 21.0
    assert values[12, "timing/images_per_second"] == 900.0
    assert histogram(values[12, "class_histogram"], 5) == [0, 3, 0, 5, 0]
    assert (_pixels(values[12, "sample"]) == 10).all()
    assert _pixels(values[12, "class_samples"]).shape == (4, 6, 3)


def test_a_rewrite_replaces_the_old_events_and_epochs_add_to_them(tmp_path):
    stale = summaries.EventLog(tmp_path)  # e.g. a killed run's events, past its checkpoint
    stale.rewrite({"seed": 1}, {"metrics.jsonl": [{"epoch": 5, "step": 60, "test_loss": 9.0}]})
    stale.close()
    log = summaries.EventLog(tmp_path)
    log.rewrite({"seed": 1}, {"metrics.jsonl": JOURNAL["metrics.jsonl"][:1]})
    log.add({"epoch": 1, "step": 12, "test_loss": 2.0}, {"epoch": 1, "step": 12, "seconds": 0.5})
    log.flush()
    assert len(list(tmp_path.glob(summaries.EVENT_FILES))) == 1
    assert [(s, t, v) for s, t, v in read_events(tmp_path) if t != "config/text_summary"] == [
        (0, "test/loss", 3.5),
        (0, "test/kl", 1.0),
        (12, "test/loss", 2.0),
        (12, "timing/seconds", 0.5),
    ]
    log.close()


def test_events_of_a_workdir_in_a_bucket_are_copied_up_at_each_flush(tmp_path):
    folder = tmp_path / "bucket"
    with fake_bucket(folder):
        workdir = io.as_path(BUCKET + "runs/a")
        workdir.mkdir(parents=True)
        log = summaries.EventLog(workdir)
        log.rewrite({"seed": 1}, JOURNAL)
        assert read_events(folder / "runs/a")[-1][1] == "timing/images_per_second"
        log.add({"epoch": 2, "step": 24, "test_loss": 1.0}, None)
        log.close()
        assert read_events(folder / "runs/a")[-1] == (24, "test/loss", 1.0)
        again = summaries.EventLog(workdir)  # a resumed run: the old file goes
        again.rewrite({"seed": 1}, {})
        again.close()
    assert [t for _, t, _ in read_events(folder / "runs/a")] == ["config/text_summary"]
