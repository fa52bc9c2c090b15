"""Runnable experiments: ``python -m experiments.<name> --help`` from the repository root."""

import sys

if sys.argv[:1] == ["-m"]:  # started as a command: a signal while importing gets one line too
    from vaejax import stopping

    stopping.exit_while_starting()
