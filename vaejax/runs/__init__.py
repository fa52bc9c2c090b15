"""The experiments: one Run per kind, the registry, the driver and :func:`load_run`."""
