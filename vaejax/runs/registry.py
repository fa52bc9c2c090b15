"""The built-in run kinds: importing this module registers them (one line per kind)."""

from vaejax.runs import (  # noqa: F401
    autoencoders,
    classifier,
    conditional,
    ddpm,
    gan,
    vae,
)
