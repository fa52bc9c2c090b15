"""Runs a suite's parts, each as its own process (one at a time, or several with ``jobs``),
and remembers which finished.

The state is ``<root>/reproduce.json`` (rewritten atomically after every part): per part its
command, the seconds of every attempt, whether it finished, when, and on which machine. A part
that finished is never run again; one that was stopped (a signal, ``--stop_after``, a crash) is
run again with the same command, and the trainings resume from their last checkpoint, so a
killed suite continues where it stopped. Each part's output goes to ``<root>/logs/<part>.log``.
"""

from __future__ import annotations

import dataclasses
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
    """Forwards SIGINT/SIGTERM/SIGHUP to the running parts (each saves a checkpoint and exits)
    and remembers the signal."""

    def __init__(self):
        self.children: list[subprocess.Popen] = []
        self.signal: int | None = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._forward) for s in _SIGNALS}
        return self

    def __exit__(self, *error):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _forward(self, signum, frame):
        self.signal = signum
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclasses.dataclass
class _Running:
    """A part whose process runs: its attempt's start and whether it was told to stop."""

    part: Part
    process: subprocess.Popen
    start: float
    told_to_stop: bool = False


def start_part(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    """Starts ``command`` with its output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"\n$ {shlex.join(command)}   # {time.strftime('%Y-%m-%d %H:%M:%S UTC')}\n")
        out.flush()
        return subprocess.Popen(
            [sys.executable, *command[1:]], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def child_environment(jobs: int) -> dict:
    """The parts' environment: unbuffered output; with several parts at a time, JAX allocates
    device memory as it needs it instead of taking most of it up front (unless told otherwise)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if jobs > 1:
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


def startable(pending: list[Part], running: list[_Running], done: set, jobs: int) -> list[Part]:
    """The pending parts to start now, in order: those whose parts are done, while fewer than
    ``jobs`` run. A part marked ``alone`` starts only when nothing runs, nothing starts beside
    it, and no later part passes it."""
    if any(r.part.alone for r in running):
        return []
    chosen: list[Part] = []
    for part in pending:
        if len(running) + len(chosen) >= jobs:
            break
        ready = set(part.uses()) <= done
        if part.alone:
            if ready and not running and not chosen:
                chosen.append(part)
            break
        if ready:
            chosen.append(part)
    return chosen


def last_error(log: Path) -> str:
    """The part's own one-line error, else its last line of output."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    rest = [line for line in lines if line and not line.startswith("$ ")]
    return (errors or rest or [""])[-1][-300:]


def _wait(running: list[_Running], deadline: float | None) -> list[_Running]:
    """Waits until a part ends (returned); past ``deadline`` tells each running part once to
    stop (SIGTERM: it saves and exits)."""
    while True:
        ended = [r for r in running if r.process.poll() is not None]
        if ended:
            return ended
        if deadline is not None and time.monotonic() > deadline:
            for r in running:
                if not r.told_to_stop:
                    r.process.send_signal(signal.SIGTERM)
                    r.told_to_stop = True
        time.sleep(0.2)


def run_suite(
    suite: str,
    parts: list[Part],
    root: Path,
    *,
    stop_after: float | None = None,
    command: str = "",
    jobs: int = 1,
    say=print,
) -> int:
    """Runs the unfinished ``parts`` into ``root``, in order, up to ``jobs`` at a time, each
    once the parts it uses are done; returns the exit status: 0 when all finished,
    :data:`UNFINISHED` when ``stop_after`` seconds ran out, 128 + the signal when stopped;
    ``command`` (the suite's command line) goes into the state. Raises :class:`SuiteError`
    when a part fails (after the parts beside it end) or waits on one that did not finish."""
    root.mkdir(parents=True, exist_ok=True)
    state = load_state(root, suite)
    state["command"] = command or state.get("command", "")
    deadline = None if stop_after is None else time.monotonic() + stop_after
    pending = [p for p in parts if not state["parts"].get(p.name, {}).get("done")]
    running: list[_Running] = []
    failed: list[str] = []
    stopped: list[str] = []
    env, machine = child_environment(jobs), None
    with Stop() as stop:
        while pending or running:
            late = deadline is not None and time.monotonic() > deadline
            if not (failed or late or stop.signal is not None):
                done = {n for n, r in state["parts"].items() if r.get("done")}
                for part in startable(pending, running, done, jobs):
                    machine = machine or describe_machine()
                    running.append(_start(part, parts, root, state, env, jobs, say))
                    stop.children.append(running[-1].process)
                    pending.remove(part)
            if not running:
                break
            for ended in _wait(running, deadline):
                running.remove(ended)
                if not _record(ended, root, state, machine, say):
                    (stopped if ended.told_to_stop or stop.signal else failed).append(
                        ended.part.name
                    )
    late = deadline is not None and time.monotonic() > deadline
    return _outcome(pending, stopped, failed, state, root, (stop.signal, late), say)


def _start(part, parts, root, state, env, jobs, say) -> _Running:
    record = state["parts"].setdefault(part.name, {"seconds": [], "done": False})
    command = command_of(part, root)
    record["command"], record["jobs"] = shlex.join(command), jobs
    index = parts.index(part) + 1
    say(f"reproduce: [{index}/{len(parts)}] {part.name}: {record['command']}")
    if not part.takes_workdir:  # its outputs go where its flags say, in its folder
        (root / part.name).mkdir(exist_ok=True)
    log = root / "logs" / f"{part.name}.log"
    return _Running(part, start_part(command, log, env), time.monotonic())


def _record(ended: _Running, root: Path, state: dict, machine: str, say) -> bool:
    """Writes the ended attempt into the state; True when the part finished."""
    record = state["parts"][ended.part.name]
    record["seconds"].append(round(time.monotonic() - ended.start, 1))
    record["done"] = ended.process.returncode == 0
    record["status"] = ended.process.returncode
    if record["done"]:
        record["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        record["machine"], record["commit"] = machine, commit()
        say(f"reproduce: {ended.part.name} done in {sum(record['seconds']):.0f} s")
    save_state(root, state)
    return record["done"]


def _outcome(pending, stopped, failed, state, root, why, say) -> int:
    """The suite's exit status once nothing runs (see :func:`run_suite`)."""
    signum, late = why
    if signum is not None and (stopped or pending):
        return _stopped(stopped, pending, root, signal.Signals(signum).name, 128 + signum, say)
    if failed:
        name = failed[0]
        log = root / "logs" / f"{name}.log"
        raise SuiteError(
            f"part {name} failed (exit {state['parts'][name]['status']}): {last_error(log)} "
            f"(its log: {log}); fix it and rerun the same command to continue"
        )
    if stopped or (pending and late):
        return _stopped(stopped, pending, root, "--stop_after", UNFINISHED, say)
    if pending:
        done = {n for n, r in state["parts"].items() if r.get("done")}
        waiting = [u for u in pending[0].uses() if u not in done]
        raise SuiteError(f"part {pending[0].name} needs {', '.join(waiting)} finished first")
    return 0


def _stopped(stopped: list[str], pending: list[Part], root: Path, why, status, say) -> int:
    if stopped:
        names = ", ".join(stopped)
        where = (
            f"in part {names} (its run saved)"
            if len(stopped) == 1
            else (f"in parts {names} (their runs saved)")
        )
    else:
        where = f"before part {pending[0].name}"
    say(
        f"reproduce: stopped by {why} {where}; rerun the same command to continue "
        f"(state: {root / STATE})"
    )
    return status
