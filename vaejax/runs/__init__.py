"""The experiments: one Run per kind, the registry, the driver and :func:`load_run`.

Importing any module of this package registers the built-in kinds first (:mod:`.registry`), so
that :func:`~vaejax.runs.base.run_class` and :func:`~vaejax.runs.load.load_run` know them all.
"""

from vaejax.runs import registry  # noqa: F401
