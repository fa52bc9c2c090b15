"""A hostile machine, with real processes: kills at chosen moments (``VAEJAX_FAULTS``, see
:mod:`vaejax.faults`), every stop signal in every phase, two runs on one workdir, a full disk,
damaged journals and checkpoints. Each case checks the exit status, the one line on stderr,
that nothing committed was lost, and that the documented recovery ends bit for bit where an
uninterrupted run ends."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.helpers import (
    REPO_ROOT,
    checkpoint_steps,
    file_snapshot,
    read_events,
    run_python,
    start_python,
)
from vaejax import io
from vaejax.training import checkpoints

# the module's fixtures train models: its tests share one pytest-xdist worker
pytestmark = pytest.mark.xdist_group("faults")

STEPS = 2 * (600 // 50)  # 2 epochs of 12 steps
PROGRESS = ("training", "evaluating", "vaejax: preparing data", "vaejax: compiling")


def _argv(workdir: Path, tfds_dir: Path, raw_dir: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "experiments.vae_mnist",
        *("--data_dir", str(tfds_dir), "--raw_data_dir", str(raw_dir)),
        *("--train_examples", "600", "--test_examples", "200", "--batch_size", "50"),
        *("--epochs", "2", "--checkpoint_every", "5", "--workdir", str(workdir)),
        *extra,
    ]


def _run(argv: list[str], faults: str = "", timeout: float = 300) -> tuple[int, str, str]:
    proc = start_python(argv, env={"VAEJAX_FAULTS": faults} if faults else None)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _lines(err: str) -> list[str]:
    """stderr without the progress bar and the timing notes."""
    parts = [p.strip() for line in err.splitlines() for p in line.split("\r")]
    return [p for p in parts if p and not p.startswith(PROGRESS)]


def _one_line(err: str, start: str) -> str:
    lines = _lines(err)
    assert len(lines) == 1 and lines[0].startswith(start), err[-3000:]
    assert "Traceback" not in err
    return lines[0]


def _same_result(workdir: Path, reference: Path) -> None:
    """The same metrics.jsonl and params.msgpack, byte for byte; a journal that agrees; the
    same TensorBoard events (times and the config's workdir aside)."""
    for name in ("metrics.jsonl", "params.msgpack"):
        assert (workdir / name).read_bytes() == (reference / name).read_bytes(), name
    timing = io.read_jsonl(workdir / "timing.jsonl")
    assert [t["epoch"] for t in timing] == [0, 1, 2]
    events, expected = _comparable_events(workdir), _comparable_events(reference)
    assert events == expected and len({tag for _, tag, _ in events}) > 10


def _comparable_events(workdir: Path) -> list:
    events = read_events(workdir)
    assert events[0][1] == "config/text_summary"
    assert json.loads(events[0][2]) == json.loads((workdir / "config.json").read_text())
    return [(s, t, None if t.startswith("timing/") else v) for s, t, v in events[1:]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mnist_tfds_dir, mnist_raw_dir) -> Path:
    workdir = tmp_path_factory.mktemp("reference") / "run"
    code, _, err = _run(_argv(workdir, mnist_tfds_dir, mnist_raw_dir))
    assert code == 0, err[-3000:]
    return workdir


@pytest.fixture
def argv(tmp_path, mnist_tfds_dir, mnist_raw_dir):
    return lambda workdir, *extra: _argv(workdir, mnist_tfds_dir, mnist_raw_dir, *extra)


def test_the_journal_agrees_with_the_newest_checkpoint(reference, argv, tmp_path):
    for visit in (1, 2):  # killed after epoch 0's line (no checkpoint yet), after epoch 1's
        workdir = tmp_path / f"killed_{visit}"
        code, _, _ = _run(argv(workdir), faults=f"metrics_written@{visit}:SIGKILL")
        assert code == -signal.SIGKILL
        assert len(io.read_jsonl(workdir / "metrics.jsonl")) == visit
        code, _, err = _run(argv(workdir))
        assert code == 0, err[-3000:]
        _same_result(workdir, reference)
    shutil.rmtree(workdir / "checkpoints")  # a finished run without its checkpoints: anew
    code, _, err = _run(argv(workdir))
    assert code == 0, err[-3000:]
    _same_result(workdir, reference)


def test_another_seed_gives_other_numbers(reference, argv, tmp_path):
    code, _, err = _run(argv(tmp_path / "other", "--seed", "2", "--epochs", "1"))
    assert code == 0, err[-3000:]
    ours = io.read_jsonl(reference / "metrics.jsonl")[1]["test_loss"]
    assert io.read_jsonl(tmp_path / "other" / "metrics.jsonl")[1]["test_loss"] != ours


@pytest.mark.parametrize("tail", [b'{"epoch": 3, "st', b"\0" * 4096])
def test_a_damaged_journal_tail_is_rewritten_from_the_checkpoint(reference, argv, tmp_path, tail):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    for name in ("metrics.jsonl", "timing.jsonl"):
        cut = (workdir / name).read_bytes()[:-30]  # the last line cut, then the damage
        (workdir / name).write_bytes(cut + tail)
    code, out, err = _run(argv(workdir))
    assert code == 0, err[-3000:]
    assert "holds a finished run of 2 epochs: nothing to train" in err + out
    _same_result(workdir, reference)


def test_a_second_run_on_a_busy_workdir_is_refused_and_a_dead_ones_lock_is_not(
    reference, argv, tmp_path
):
    workdir = tmp_path / "run"
    first = start_python(argv(workdir), env={"VAEJAX_FAULTS": "stretch:SIGSTOP"})
    deadline = time.monotonic() + 120
    while f'"pid": {first.pid}' not in _read(workdir / ".lock"):  # holding the lock
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # now stopped in training
    code, _, err = _run(argv(workdir))
    line = _one_line(err, f"error: workdir {workdir.absolute()} is in use by process ")
    assert code == 2 and f"process {first.pid} on " in line and "experiments.vae_mnist" in line
    first.kill()  # dies holding the lock
    first.communicate()
    code, _, err = _run(argv(workdir))
    assert code == 0, err[-3000:]
    _same_result(workdir, reference)


PHASES = [  # (fault point, signal): every phase, each signal in several
    ("preparing_data", "SIGINT"),
    ("compile", "SIGTERM"),
    ("evaluation@1", "SIGHUP"),  # the first evaluation
    ("stretch@2", "SIGTERM"),  # in the training loop: saves a checkpoint first
    ("evaluation@1", "SIGINT"),  # resumed: the end of an epoch
    ("stretch@1", "SIGHUP"),
    ("final_pictures", "SIGTERM"),
    ("compile", "SIGHUP"),  # a finished run compiles, draws and saves again
    ("final_pictures", "SIGINT"),
]


def test_every_signal_in_every_phase_is_one_line_and_resumes_bit_for_bit(reference, argv, tmp_path):
    workdir = tmp_path / "run"
    for where, name in PHASES:
        saved = checkpoint_steps(workdir)
        code, _, err = _run(argv(workdir), faults=f"{where}:{name}")
        number = getattr(signal, name)
        assert code == 128 + number, (where, name, err[-3000:])
        line = _one_line(err, f"vaejax: stopped by {name} ")
        now = checkpoint_steps(workdir)
        assert set(saved) <= set(now) | set(range(max(now, default=0)))  # only older dropped
        if now:
            assert f"checkpoint {now[-1]} in " in line and "rerun the same command" in line
        else:
            assert "nothing was saved yet" in line
    code, _, err = _run(argv(workdir))
    assert code == 0, err[-3000:]
    _same_result(workdir, reference)


def test_a_signal_while_importing_is_one_line(argv, tmp_path):
    proc = start_python(argv(tmp_path / "run"))
    time.sleep(0.3)  # importing jax and flax takes seconds
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert _one_line(err, "vaejax: stopped by SIGINT while starting; nothing was saved yet")
    assert not (tmp_path / "run").exists()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def _flip_byte(path: Path) -> None:
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0x5A
    path.write_bytes(bytes(payload))


def _checkpoint_files(workdir: Path) -> list[Path]:
    return sorted(p for p in (workdir / "checkpoints" / str(STEPS)).rglob("*") if p.is_file())


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_every_damaged_checkpoint_file_is_refused_or_harmless(reference, tmp_path, damage):
    good = checkpoints.restore(reference / "checkpoints", STEPS)
    files = _checkpoint_files(reference)
    assert len(files) >= 8
    for original in files:
        folder = tmp_path / original.relative_to(reference).as_posix().replace("/", "_")
        shutil.copytree(reference / "checkpoints" / str(STEPS), folder / str(STEPS))
        path = folder / original.relative_to(reference / "checkpoints")
        _flip_byte(path) if damage == "flip" else path.write_bytes(path.read_bytes()[:-7])
        try:
            step = checkpoints.latest_step(folder)
            checkpoints.read_meta(folder, step)
            restored = checkpoints.restore(folder, step)
        except checkpoints.CheckpointError as e:
            assert str(folder / str(STEPS)) in str(e)
            continue
        assert step == STEPS  # read as good: then it is exactly the checkpoint saved
        assert all(np.array_equal(a, b) for a, b in zip(_leaves(restored), _leaves(good)))


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def test_a_damaged_checkpoint_is_refused_then_set_aside_on_request(reference, argv, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    (workdir / "params.msgpack").unlink()
    arrays = max(_checkpoint_files(workdir), key=lambda p: p.stat().st_size)
    _flip_byte(arrays)
    before = file_snapshot(workdir)
    code, _, err = _run(argv(workdir))
    line = _one_line(err, f"error: checkpoint {workdir / 'checkpoints' / str(STEPS)} is damaged")
    assert code == 2 and "fails its checksum" in line and "--damaged_checkpoints set_aside" in line
    assert file_snapshot(workdir) == before  # refused: nothing changed
    cut = tmp_path / "cut"  # a file cut short: the same one line, and no noise from orbax
    shutil.copytree(reference, cut)
    arrays = max(_checkpoint_files(cut), key=lambda p: p.stat().st_size)
    arrays.write_bytes(arrays.read_bytes()[: arrays.stat().st_size // 2])
    code, _, err = _run(argv(cut))
    assert code == 2 and _one_line(
        err, f"error: checkpoint {cut / 'checkpoints' / str(STEPS)} is damaged"
    )
    code, _, err = _run(argv(workdir, "--damaged_checkpoints", "set_aside"))
    assert code == 0, err[-3000:]
    assert (workdir / "damaged_checkpoints" / str(STEPS)).is_dir()
    _same_result(workdir, reference)


RESTORE_CUT = """
import sys
from vaejax.training import checkpoints
try:
    checkpoints.restore(sys.argv[1], 1)
except checkpoints.DamagedCheckpoint as e:
    print("error:", e, file=sys.stderr)
"""


def test_a_cut_checkpoint_read_by_many_reads_at_once_is_one_line(tmp_path):
    """Many arrays in one cut file: orbax abandons the other reads once one fails, and their
    late failures (asyncio's unretrieved futures, callbacks into the closed event loop) would
    print after the error line; on this 2-core VM they did in about half the runs."""
    manager = checkpoints.open_checkpoints(tmp_path, 2)
    noise = np.random.default_rng(0)
    state = {f"w{i}": noise.random((300, 300), np.float32) for i in range(12)}
    checkpoints.save(manager, 1, state, {"step": 1})
    checkpoints.close(manager)
    arrays = max((p for p in tmp_path.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    arrays.write_bytes(arrays.read_bytes()[: arrays.stat().st_size // 2])
    for _ in range(3):
        proc = run_python(["-c", RESTORE_CUT, str(tmp_path)])
        assert proc.returncode == 0
        _one_line(proc.stderr, f"error: checkpoint {tmp_path / '1'} is damaged")


ECHOES = """
import sys
from vaejax.training import checkpoints
checkpoints.quiet_closed_event_loops()
checkpoints.quiet_closed_event_loops()  # twice is the same as once


class Callback:
    def __init__(self, message):
        self.message = message

    def __del__(self):  # an error here goes through sys.unraisablehook
        raise RuntimeError(self.message)


for message in ("Event loop is closed", "a real failure"):
    Callback(message)
    error = RuntimeError(message)
    sys.excepthook(RuntimeError, error, None)  # what PyErr_Print does with a callback's error
"""


def test_closed_event_loop_echoes_are_dropped_and_other_errors_are_not():
    """tensorstore reports a callback into orbax's closed event loop through ``PyErr_Print``
    (sys.excepthook) or ``PyErr_WriteUnraisable`` (sys.unraisablehook); both are dropped, and
    any other error still prints through both."""
    proc = run_python(["-c", ECHOES])
    assert proc.returncode == 0, proc.stderr
    assert "Event loop is closed" not in proc.stderr
    assert proc.stderr.count("RuntimeError: a real failure") == 2, proc.stderr


def _unshare_works() -> bool:
    try:
        probe = ["unshare", "--user", "--map-root-user", "--mount", "true"]
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def test_a_full_disk_is_one_line_and_resume_after_freeing_space_is_exact(reference, argv, tmp_path):
    if not _unshare_works():
        pytest.skip("this machine cannot mount a small filesystem (no user namespaces)")
    mount, kept = tmp_path / "small", tmp_path / "kept"
    mount.mkdir()
    workdir = mount / "run"
    command = " ".join(f"'{a}'" for a in [sys.executable, *argv(workdir)])
    script = (  # a 12 MB filesystem holds one checkpoint (6.3 MB) but not a second
        f"mount -t tmpfs -o size=12m tmpfs {mount} && cd {REPO_ROOT} && "
        f"{{ {command} > {tmp_path}/out1 2> {tmp_path}/err1; echo $? > {tmp_path}/code1; }}; "
        f"cp -a {workdir} {kept}; mount -o remount,size=64m {mount} && "
        f"{{ {command} > {tmp_path}/out2 2> {tmp_path}/err2; echo $? > {tmp_path}/code2; }}; "
        f"cp -a {workdir} {tmp_path}/finished"
    )
    subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        check=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu"),
    )
    err = (tmp_path / "err1").read_text()
    assert (tmp_path / "code1").read_text().strip() == "2", err[-3000:]
    line = _one_line(err, f"error: no space left on the device of {workdir}")
    saved = checkpoint_steps(kept)
    assert saved and saved[-1] < STEPS and not (kept / "params.msgpack").exists()
    assert "MB free; a checkpoint of this run takes" in line
    assert f"checkpoint {saved[-1]} in {workdir / 'checkpoints'} is kept" in line
    for step in saved:  # committed, and each passes its checksums
        checkpoints.restore(kept / "checkpoints", step)
    assert (tmp_path / "code2").read_text().strip() == "0", (tmp_path / "err2").read_text()
    _same_result(tmp_path / "finished", reference)


# starts a new session whose controlling terminal is standard input, then becomes the command
# (in the child itself: no preexec_fn, which forking a multithreaded process makes unsafe)
IN_A_TERMINAL = (
    "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def test_a_dropped_terminal_saves_a_checkpoint_and_exits_129(argv, tmp_path):
    workdir = tmp_path / "run"
    master, terminal = pty.openpty()
    proc = subprocess.Popen(  # as under ssh: the terminal is the run's controlling terminal
        [
            sys.executable,
            "-c",
            IN_A_TERMINAL,
            *argv(workdir, "--epochs", "200", "--checkpoint_every", "100000"),
        ],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu"),
    )
    os.close(terminal)
    shown, deadline = b"", time.monotonic() + 120
    while b"epoch   2" not in shown:
        assert time.monotonic() < deadline and proc.poll() is None, shown[-2000:]
        shown += os.read(master, 65536)
    os.close(master)  # the connection drops: the kernel sends SIGHUP, the terminal is gone
    assert proc.wait(timeout=120) == 128 + signal.SIGHUP
    saved = checkpoint_steps(workdir)
    assert saved[-1] >= 2 * 12  # the step it reached, not only the first checkpoint
    epochs = [r["epoch"] for r in io.read_jsonl(workdir / "metrics.jsonl")]
    assert epochs == list(range(saved[-1] // 12 + 1))  # the journal the checkpoint vouches for
