"""Runs a suite's parts one after another, each as its own process, and remembers which finished.

The state is ``<root>/reproduce.json`` (rewritten atomically after every part): per part its
command, the seconds of every attempt, whether it finished, when, and on which machine. A part
that finished is never run again; one that was stopped (a signal, ``--stop_after``, a crash) is
run again with the same command, and the trainings resume from their last checkpoint, so a
killed suite continues where it stopped. Each part's output goes to ``<root>/logs/<part>.log``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from experiments.reproducing.suites import Part
from vaejax import io

STATE = "reproduce.json"
UNFINISHED = 75  # exit status when --stop_after ends the invocation early (EX_TEMPFAIL)
REPO_ROOT = Path(__file__).resolve().parents[2]


class SuiteError(Exception):
    """A suite cannot go on: one line naming the fix."""


def command_of(part: Part, root: Path) -> list[str]:
    """The part's command line (``python -m ...``), its ``{name}`` flags resolved in ``root``."""
    flags = [re.sub(r"\{(\w+)\}", lambda m: str(root / m.group(1)), flag) for flag in part.flags]
    if part.takes_workdir:
        flags += ["--workdir", str(root / (part.evaluates or part.name))]
    return ["python", "-m", part.module, *flags]


def load_state(root: Path, suite: str) -> dict:
    path = root / STATE
    if not path.is_file():
        return {"suite": suite, "parts": {}}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SuiteError(f"cannot read {path} ({e}): delete it to start the suite again") from None
    if state.get("suite") != suite:
        raise SuiteError(
            f"{root} holds the {state.get('suite')!r} suite, not {suite!r}: pass another --workdir"
        )
    return state


def save_state(root: Path, state: dict) -> None:
    io.atomic_write_bytes(root / STATE, (json.dumps(state, indent=2) + "\n").encode())


def describe_machine() -> str:
    """'cpu: <model name> (N cores)' or 'gpu: <device kind> x N', asked of a fresh process so
    that this one never holds an accelerator while the parts run."""
    probe = (
        "import jax, os\n"
        "d = jax.devices()[0]\n"
        "name = d.device_kind\n"
        "if d.platform == 'cpu':\n"
        "    for line in open('/proc/cpuinfo') if os.path.exists('/proc/cpuinfo') else []:\n"
        "        if line.startswith('model name'):\n"
        "            name = line.split(':', 1)[1].strip(); break\n"
        "    print(f'cpu: {name} ({os.cpu_count()} cores)')\n"
        "else:\n"
        "    print(f'{d.platform}: {name} x {jax.device_count()}, jax {jax.__version__}')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=False
    )
    return out.stdout.strip() or "unknown machine"


def commit() -> str:
    """The project's git commit (short), or 'unknown' outside a git checkout."""
    out = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


class Stop:
    """Forwards SIGINT/SIGTERM/SIGHUP to the running part (which saves a checkpoint and exits)
    and remembers the signal."""

    def __init__(self):
        self.child: subprocess.Popen | None = None
        self.signal: int | None = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._forward) for s in _SIGNALS}
        return self

    def __exit__(self, *error):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _forward(self, signum, frame):
        self.signal = signum
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_part(command: list[str], log: Path, stop: Stop, deadline: float | None) -> int:
    """Runs ``command`` (its output appended to ``log``) to its end; past ``deadline``
    (``time.monotonic()``) sends it SIGTERM, so that it saves and exits. Returns its status."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "a") as out:
        out.write(f"\n$ {shlex.join(command)}   # {time.strftime('%Y-%m-%d %H:%M:%S UTC')}\n")
        out.flush()
        stop.child = subprocess.Popen(
            [sys.executable, *command[1:]], stdout=out, stderr=subprocess.STDOUT, env=env
        )
        while True:
            try:
                return stop.child.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() > deadline:
                    stop.child.send_signal(signal.SIGTERM)
                    deadline = None  # once; the part saves and exits


def last_error(log: Path) -> str:
    """The part's own one-line error, else its last line of output."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    rest = [line for line in lines if line and not line.startswith("$ ")]
    return (errors or rest or [""])[-1][-300:]


def run_suite(
    suite: str,
    parts: list[Part],
    root: Path,
    *,
    stop_after: float | None = None,
    command: str = "",
    say=print,
) -> int:
    """Runs the unfinished ``parts`` in order into ``root``; returns the exit status: 0 when
    all finished, :data:`UNFINISHED` when ``stop_after`` seconds ran out, 128 + the signal
    when stopped; ``command`` (the suite's command line) goes into the state. Raises
    :class:`SuiteError` when a part fails or waits on one that did not finish."""
    root.mkdir(parents=True, exist_ok=True)
    state = load_state(root, suite)
    state["command"] = command or state.get("command", "")
    deadline = None if stop_after is None else time.monotonic() + stop_after
    machine = None
    with Stop() as stop:
        for index, part in enumerate(parts, 1):
            record = state["parts"].setdefault(part.name, {"seconds": [], "done": False})
            if record["done"]:
                continue
            if stop.signal is not None:  # arrived between two parts
                return _stopped(
                    part, root, signal.Signals(stop.signal).name, 128 + stop.signal, say, True
                )
            waiting = [u for u in part.uses() if not state["parts"].get(u, {}).get("done")]
            if waiting:
                raise SuiteError(f"part {part.name} needs {', '.join(waiting)} finished first")
            machine = machine or describe_machine()
            command = command_of(part, root)
            record["command"] = shlex.join(command)
            say(f"reproduce: [{index}/{len(parts)}] {part.name}: {record['command']}")
            if not part.takes_workdir:  # its outputs go where its flags say, in its folder
                (root / part.name).mkdir(exist_ok=True)
            start = time.monotonic()
            status = run_part(command, root / "logs" / f"{part.name}.log", stop, deadline)
            record["seconds"].append(round(time.monotonic() - start, 1))
            record["done"] = status == 0
            if record["done"]:
                record["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
                record["machine"], record["commit"] = machine, commit()
            save_state(root, state)
            if stop.signal is not None:
                return _stopped(
                    part, root, signal.Signals(stop.signal).name, 128 + stop.signal, say
                )
            if deadline is not None and time.monotonic() > deadline and not record["done"]:
                return _stopped(part, root, "--stop_after", UNFINISHED, say)
            if not record["done"]:
                log = root / "logs" / f"{part.name}.log"
                raise SuiteError(
                    f"part {part.name} failed (exit {status}): {last_error(log)} (its log: {log}); "
                    f"fix it and rerun the same command to continue"
                )
            say(f"reproduce: {part.name} done in {sum(record['seconds']):.0f} s")
            if deadline is not None and time.monotonic() > deadline and index < len(parts):
                return _stopped(parts[index], root, "--stop_after", UNFINISHED, say, before=True)
    return 0


def _stopped(part: Part, root: Path, why: str, status: int, say, before=False) -> int:
    where = f"before part {part.name}" if before else f"in part {part.name} (its run saved)"
    say(
        f"reproduce: stopped by {why} {where}; rerun the same command to continue "
        f"(state: {root / STATE})"
    )
    return status
