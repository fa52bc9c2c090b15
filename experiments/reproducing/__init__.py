"""The parts, runner and report of ``experiments.reproduce``."""
