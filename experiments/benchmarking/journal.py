"""The benchmark's measurements kept across a stopped run.

Each finished measurement is appended as one JSON line to ``<out>.partial`` (its spec, its device
count, this machine's name and its result). A rerun with the same ``--out`` on the same machine
takes the measurements it finds there and measures only the rest, so a benchmark stopped by a
signal or by ``experiments.reproduce --stop_after`` continues where it stopped; the file is
removed once the tables are written. Failed measurements are not kept (they are measured again);
a line cut by a kill is skipped; another machine's lines are ignored.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Callable


class Journal:
    """``measure(spec, devices)`` through the kept results of earlier runs of the same ``out``."""

    def __init__(self, out: str | Path, measure: Callable[..., dict]):
        self.path = Path(f"{out}.partial")
        self.host = socket.gethostname()
        self._measure = measure
        self.kept: dict[str, dict] = {}
        try:
            text = self.path.read_text()
        except OSError:
            text = ""
        self._cut = bool(text) and not text.endswith("\n")  # the next line starts on its own
        lines = text.splitlines()
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the last line of a run killed while writing it
            if isinstance(entry, dict) and entry.get("host") == self.host:
                self.kept[entry["key"]] = entry["result"]

    def measure(self, spec: dict, devices: int | None = None) -> dict:
        key = json.dumps({"spec": spec, "devices": devices}, sort_keys=True)
        if key in self.kept:
            return self.kept[key]
        result = self._measure(spec, devices)
        if "error" not in result:
            line = json.dumps({"key": key, "host": self.host, "result": result})
            with open(self.path, "a") as out:
                out.write(("\n" if self._cut else "") + line + "\n")
            self._cut = False
            self.kept[key] = result
        return result

    def close(self) -> None:
        """The run is complete: its tables are written, the kept measurements go."""
        self.path.unlink(missing_ok=True)
