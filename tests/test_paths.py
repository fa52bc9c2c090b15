"""Workdirs in an object store (``gs://``): the files a run writes go through etils.epath. An
in-memory stand-in for the bucket is not available to tensorstore (orbax's array writer), so the
fake file system here is epath's own mock backend mapping ``gs://bucket/`` onto a local folder:
it runs the same vaejax code as a real bucket (the epath branch of vaejax.io and the remote
workdir lock); checkpoints on a real bucket are orbax's and were not tried here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import BUCKET, fake_bucket, run_python
from vaejax import io
from vaejax.training.resume import WorkdirError
from vaejax.training.workdir_lock import workdir_lock


def test_files_of_a_run_round_trip_in_the_bucket(tmp_path):
    with fake_bucket(tmp_path):
        workdir = io.as_path(BUCKET + "runs/a")
        assert not io.is_local(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        io.atomic_write_bytes(workdir / "config.json", b'{"seed": 1}')
        for epoch in range(3):
            io.append_jsonl(workdir / "metrics.jsonl", {"epoch": epoch, "loss": 1.0 / (1 + epoch)})
        io.save_image_grid(workdir / "samples.png", np.zeros((4, 8, 8, 3)), 2)
        io.save_params(workdir / "params.msgpack", {"w": np.arange(3.0)})
        assert [r["epoch"] for r in io.read_jsonl(workdir / "metrics.jsonl")] == [0, 1, 2]
        loaded = io.load_params(workdir / "params.msgpack", {"w": np.zeros(3)})
        assert loaded["w"].tolist() == [0.0, 1.0, 2.0]
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "runs/a/config.json",
        "runs/a/metrics.jsonl",
        "runs/a/params.msgpack",
        "runs/a/samples.png",
    ]
    assert json.loads((tmp_path / "runs/a/config.json").read_text()) == {"seed": 1}


def test_a_busy_bucket_workdir_is_refused_and_its_lock_removed_at_the_end(tmp_path):
    with fake_bucket(tmp_path):
        workdir = io.as_path(BUCKET + "runs/b")
        with workdir_lock(workdir):
            lock = json.loads((tmp_path / "runs/b/.lock").read_text())
            assert lock["pid"] > 0 and lock["host"]
            with workdir_lock(workdir):  # the same process again: a no-op
                pass
        assert not (tmp_path / "runs/b/.lock").exists()
        (tmp_path / "runs/b/.lock").write_text(json.dumps({**lock, "pid": 4242}))  # another run
        with pytest.raises(WorkdirError, match="in use by process 4242 on .*delete gs://"):
            with workdir_lock(workdir):
                pass
        assert json.loads((tmp_path / "runs/b/.lock").read_text())["pid"] == 4242  # not touched


def test_a_bucket_that_cannot_be_reached_is_one_line(tmp_path):
    done = run_python(
        ["-m", "experiments.vae_mnist", "--workdir", "gs://vaejax-no-such-bucket/run"],
        env={"JAX_PLATFORMS": "cpu"},
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr.strip()
    assert err.startswith("error: cannot use workdir gs://vaejax-no-such-bucket/run (")
    assert "gcsfs" in err and "\n" not in err
