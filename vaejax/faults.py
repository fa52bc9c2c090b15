"""Named fault points, for testing what a run does when the machine fails at a given moment.

Code calls :func:`point` at moments worth testing (e.g. ``point("metrics_written")`` between
writing an epoch's metrics and committing its checkpoint). Normally this does nothing (one
dictionary lookup). When the environment variable ``VAEJAX_FAULTS`` names the point, as in
``VAEJAX_FAULTS=metrics_written:SIGKILL`` (several: comma-separated; ``point@N:SIGNAL`` for the
point's N-th visit, counting from 1), the process sends itself that signal there, exactly as
if it had arrived from outside at that moment.
"""

from __future__ import annotations

import os
import signal

ENV = "VAEJAX_FAULTS"


def _parse(text: str) -> dict[str, tuple[int, int]]:
    faults = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        where, _, what = item.partition(":")
        name, _, visit = where.partition("@")
        faults[name] = (int(visit or 1), int(signal.Signals[what]))
    return faults


_FAULTS = _parse(os.environ.get(ENV, ""))
_VISITS: dict[str, int] = {}


def point(name: str) -> None:
    """A moment where a fault may be injected (see the module)."""
    if name not in _FAULTS:
        return
    _VISITS[name] = _VISITS.get(name, 0) + 1
    visit, signum = _FAULTS[name]
    if _VISITS[name] == visit:
        os.kill(os.getpid(), signum)
