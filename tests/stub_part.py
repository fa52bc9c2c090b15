"""A stand-in part for the runner's tests: records when it ran, sleeps, exits with a status.

python -m tests.stub_part --seconds S [--status N] [--after DIR] --workdir DIR
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--status", type=int, default=0)
    parser.add_argument("--after", default="")  # names a part it uses; not read
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    out = Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    def record(**more):
        (out / "times.json").write_text(json.dumps({"start": start, "end": time.time(), **more}))

    def stop(signum, frame):
        record(stopped=True)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    time.sleep(args.seconds)
    record()
    if args.status:
        print("error: this part was told to fail")
    return args.status


if __name__ == "__main__":
    raise SystemExit(main())
