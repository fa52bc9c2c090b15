"""Runnable experiments: ``python -m experiments.<name> --help`` from the repository root."""
