"""Helpers shared by the tests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BUCKET = "gs://bucket/"  # what fake_bucket maps onto a local folder


def run_python(args, *, env=None, timeout=600, cwd=REPO_ROOT, replace_env=False):
    """Runs ``python args...`` in the repository root; returns the CompletedProcess. ``env`` is
    added to this process's environment, or replaces it with ``replace_env``."""
    full_env = {} if replace_env else dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in [full_env.get("PYTHONPATH")] if p]
    )
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_on_devices(script: str, devices: int, *args: str) -> dict:
    """Runs ``python -c script args...`` on ``devices`` forced CPU devices and returns the JSON
    object the script prints on its last line."""
    done = run_python(
        ["-c", script, *args],
        env={
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "JAX_PLATFORMS": "cpu",
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def grid_size(rows, columns, image=28, padding=2, scale=2):
    """(width, height) of a PNG written by ``vaejax.io.save_image_grid``."""
    return (columns * (image + padding) + padding) * scale, (
        rows * (image + padding) + padding
    ) * scale


def start_python(argv, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts ``python argv...`` in the repository root on the CPU (``env``: more environment
    variables), its output piped."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu", **(env or {}))
    return subprocess.Popen(
        [sys.executable, *argv],
        cwd=REPO_ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def checkpoint_steps(workdir: Path) -> list[int]:
    """The steps of the checkpoints in ``workdir``, ascending."""
    folder = workdir / "checkpoints"
    return (
        sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    )


def wait_for_checkpoint_after(proc, workdir: Path, step: int, timeout=120) -> None:
    """Waits until ``workdir`` holds a checkpoint past ``step``; fails if ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while not any(s > step for s in checkpoint_steps(workdir)):
        assert proc.poll() is None, f"run ended early: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)


def killed_and_rerun(argv, fault: str = "metrics_written@2:SIGKILL"):
    """Runs ``python argv...`` killed at a fault point (:mod:`vaejax.faults`; by default at the
    end of the first epoch, after its metrics line and before its checkpoint), then runs it
    again to the end; returns the second run's CompletedProcess."""
    killed = run_python(argv, env={"VAEJAX_FAULTS": fault})
    assert killed.returncode == -9, killed.stderr[-3000:]
    return run_python(argv)


def file_snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file's size and modification time under ``folder``, but the workdir lock's (a
    command rewrites it to name itself before it looks at the workdir)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if not p.name.startswith(".lock")
    }


@contextlib.contextmanager
def fake_bucket(root: Path):
    """epath's backend for every scheme, with ``gs://bucket/...`` read and written under
    ``root``."""

    def local(value):
        if isinstance(value, str) and value.startswith(BUCKET):
            return str(root / value[len(BUCKET) :])
        return value

    def translated(original, *args, **kwargs):
        return original(*(local(a) for a in args), **kwargs)

    names = ("exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "open", "remove")
    names += ("rename", "replace", "rmtree", "stat", "walk", "copy")
    from etils.epath import testing as epath_testing

    with epath_testing.mock_epath(**{name: translated for name in names}):
        yield


def read_events(workdir) -> list[tuple[int, str, object]]:
    """(step, tag, value) of every summary in the TensorBoard event files of ``workdir``, read by
    tensorboard's own reader, in file order: a float for a scalar, the PNG bytes for an image,
    the text for text, (limits, counts) for a histogram."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    found = []
    for path in sorted(Path(workdir).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                array = tensor_util.make_ndarray(value.tensor)
                if plugin == "scalars":
                    payload = float(array)
                elif plugin == "images":
                    payload = array[2]  # [width, height, PNG]
                elif plugin == "text":
                    payload = array.item().decode()
                else:  # histograms: [buckets, 3] of (left edge, right edge, count)
                    payload = (array[:, 1].tolist(), array[:, 2].tolist())
                found.append((event.step, value.tag, payload))
    return found


def histogram(read: tuple[list, list], size: int) -> list[int]:
    """The list of ``size`` counts a histogram of :func:`read_events` was written from (bucket
    i spans [i - 1/2, i + 1/2])."""
    counts = [0] * size
    for right, count in zip(*read):
        counts[round(right - 0.5)] = int(count)
    return counts
