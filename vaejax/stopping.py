"""Stopping on a signal at any moment: SIGINT (Ctrl-C), SIGTERM (preemption), SIGHUP (a dropped
terminal).

Three regimes, chosen by where the run is:

- :func:`raising` (the whole command): a signal raises :class:`Interrupted` at once, in the
  main thread, wherever the run is (preparing data, compiling, evaluating, drawing pictures);
  nothing half-written is left, since every file is written under a temporary name first and
  checkpoints are committed by a rename.
- :func:`flagged` (the training loop): a signal is noted; the loop finishes its stretch of
  steps (about a second), saves a checkpoint and raises :class:`Interrupted` itself. A second
  signal of the same kind acts as the default (stops the process at once).
- :func:`deferred` (critical sections such as waiting for a checkpoint to be committed): a
  signal is held until the section ends, then raised.

Handlers can only be installed from the main thread; elsewhere these do nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
from typing import Callable, Iterator

SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


_DOING = ["running"]  # what the run is doing, for the line printed when a signal stops it


def doing() -> str:
    """What the run is doing now (e.g. 'preparing data'), as set by :func:`activity`."""
    return _DOING[-1]


@contextlib.contextmanager
def activity(label: str) -> Iterator[None]:
    """Names what the run does while the block runs (see :func:`doing`)."""
    _DOING.append(label)
    try:
        yield
    finally:
        _DOING.pop()


class Interrupted(BaseException):
    """The run stopped on signal ``signum``; the message (if any) says what was saved.

    A ``BaseException``, as ``KeyboardInterrupt`` is: raised from a signal handler anywhere, it
    must not be swallowed by a library's ``except Exception`` (JAX's compilation cache reader,
    for one, turns any such error into a warning and goes on)."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum = signum
        self.during = doing()  # what the run was doing when the signal came


class Flag:
    """Remembers the first stop signal received while installed."""

    def __init__(self):
        self.signum: int | None = None


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _leave_a_hung_up_terminal(signum: int) -> None:
    """On SIGHUP, points standard output and error that are a terminal at /dev/null: the
    terminal is gone (a dropped ssh session), and writing to it would fail before the run could
    save (output to a file or a pipe is kept)."""
    if signum != getattr(signal, "SIGHUP", None):
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for fd in (1, 2):
        try:  # a terminal: a character device other than /dev/null (isatty fails once hung up)
            mode, device = os.fstat(fd).st_mode, os.fstat(fd).st_rdev
            if stat.S_ISCHR(mode) and device != os.fstat(null).st_rdev:
                os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)


@contextlib.contextmanager
def _handling(handler: Callable) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _raise(signum, frame):
    del frame
    _leave_a_hung_up_terminal(signum)
    raise Interrupted(signum)


def raising() -> contextlib.AbstractContextManager[None]:
    """While active, a stop signal raises :class:`Interrupted` (without a message)."""
    return _handling(_raise)


@contextlib.contextmanager
def _noting(second_acts: bool) -> Iterator[Flag]:
    """Notes the first stop signal in the yielded :class:`Flag` (with ``second_acts``, the next
    one of the same kind gets the default action) and raises :class:`Interrupted` for it when
    the block ends normally."""
    flag = Flag()

    def note(signum, frame):
        del frame
        _leave_a_hung_up_terminal(signum)
        if flag.signum is None:
            flag.signum = signum
        if second_acts:
            signal.signal(signum, signal.SIG_DFL)

    with _handling(note):
        yield flag
    if flag.signum is not None:  # came after the block last looked: acted on here
        raise Interrupted(flag.signum)


def flagged() -> contextlib.AbstractContextManager[Flag]:
    """While active, a stop signal is noted in the yielded :class:`Flag`, for the block to act
    on; a second one of the same kind gets the default action. A signal noted but not acted on
    (the block ended normally) raises :class:`Interrupted` when the block ends."""
    return _noting(second_acts=True)


def deferred() -> contextlib.AbstractContextManager[Flag]:
    """Holds stop signals until the block ends, then raises :class:`Interrupted` for the first
    (unless the block raised already)."""
    return _noting(second_acts=False)


def exit_while_starting() -> None:
    """Until :func:`raising` or :func:`flagged` take over, a stop signal ends the process at
    once with one line (for the seconds a command spends importing its libraries, when nothing
    can have been saved)."""

    def leave(signum, frame):
        del frame
        try:
            os.write(
                2,
                f"vaejax: stopped by {signal_name(signum)} while starting; nothing was saved yet: "
                f"rerun the same command to start again\n".encode(),
            )
        finally:
            os._exit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, leave)
