"""Errors every layer may raise; each message names the fix.

Also the limits of the machine, as one line each: the integers a setting may take
(:data:`LARGEST_INT`, :func:`beyond_int`), and what a run that ran out of memory prints
(:func:`machine_limit_message`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, NamedTuple


class ConfigError(ValueError):
    """A setting that cannot work; the message names the fix."""


# JAX without 64-bit mode counts steps, sizes and indices in int32: every integer setting, and
# what the run derives from them (the number of training steps), stays within these.
LARGEST_INT = 2**31 - 1
SMALLEST_INT = -(2**31)

_INTEGER = re.compile(r"[+-]?\d[\d_]*")


def beyond_int(text: str) -> str | None:
    """For the decimal text of an integer outside [SMALLEST_INT, LARGEST_INT], the one line
    '100000000000000000000 is beyond the largest integer vaejax takes (2147483647)'; None for
    any other text."""
    text = text.strip()
    if not _INTEGER.fullmatch(text):
        return None
    digits = text.lstrip("+-").replace("_", "").lstrip("0")
    negative = text.startswith("-")
    if len(digits) <= len(str(LARGEST_INT)) and SMALLEST_INT <= int(text) <= LARGEST_INT:
        return None
    shown = text if len(text) <= 40 else f"{text[:20]}... ({len(digits)} digits)"
    if negative:
        return f"{shown} is beyond the smallest integer vaejax takes ({SMALLEST_INT})"
    return f"{shown} is beyond the largest integer vaejax takes ({LARGEST_INT})"


_OUT_OF_MEMORY = re.compile(
    r"RESOURCE_EXHAUSTED|out of memory|Unable to allocate|CUDA_ERROR_OUT_OF_MEMORY", re.I
)
_TOO_LARGE = re.compile(
    r"size exceeding 2 \*\* 64|more than 2\^31-1 elements|array is too big|"
    r"Maximum allowed dimension exceeded",
    re.I,
)
_REQUESTED = (  # the bytes one allocation asked for, as the message writes them
    re.compile(r"allocat\w*\s+(\d+)\s*bytes", re.I),
    re.compile(r"\((\d+)B\)"),
    re.compile(r"allocate (\d+(?:\.\d*)?) ?([KMGTPE]?)i?B\b"),  # '256. TiB', '256.00TiB'
)
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """``error``, then its ``__cause__`` or ``__context__``, and so on (each once)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _size(n: float) -> str:
    """Bytes as '149.0 GiB'."""
    units, i = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"), 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


def _host_memory() -> int | None:
    """The machine's memory in bytes (its container's limit, where lower); None if unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit = ""
    return min(total, int(limit)) if limit.isdigit() else total


def _device_memory(host: bool) -> tuple[str, int | None]:
    """(which memory ran out: 'the cpu', 'the NVIDIA H200 gpu', 'the TPU v4'; its bytes or None):
    JAX's first device's, or the host's for a failure of host memory (``host``)."""
    if host:
        return "the host", _host_memory()
    try:
        import jax

        device = jax.devices()[0]
    except Exception:  # noqa: BLE001 - the backend is gone: name no device
        return "the device", None
    name, kind = device.platform, str(getattr(device, "device_kind", ""))
    label = f"the {kind or name}" if name in kind.lower() or not kind else f"the {kind} {name}"
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - a backend without memory statistics
        stats = {}
    limit = stats.get("bytes_limit")
    if limit is None and name == "cpu":
        limit = _host_memory()
    return label, limit


def _requested(text: str) -> str | None:
    """The bytes one allocation asked for, as '149.0 GiB', if ``text`` says."""
    for pattern in _REQUESTED:
        found = pattern.search(text)
        if found:
            power = _POWERS[found.group(2)] if pattern.groups > 1 else 0
            return _size(float(found.group(1)) * 1024**power)
    return None


class MemoryFlags(NamedTuple):
    """The flags that lower the memory a run takes, in the order a fix names them: those that
    set its batches, then those that set its model's size (a Run declares both)."""

    batch: tuple[str, ...] = ()
    size: tuple[str, ...] = ()


NO_FLAGS = MemoryFlags()


def _size_flags(flags: MemoryFlags) -> str:
    """' (--latent_dim, --hidden_dim)': the flags that set the model's size; ''."""
    return f" ({', '.join(f'--{n}' for n in flags.size)})" if flags.size else ""


def _fix(flags: MemoryFlags) -> str:
    """'lower --batch_size or --eval_batch_size, or the model's size (--latent_dim, ...)'."""
    batch_text = " or ".join(f"--{n}" for n in flags.batch) if flags.batch else "the batch size"
    return f"lower {batch_text}, or the model's size{_size_flags(flags)}"


def machine_limit_message(error: BaseException, flags: MemoryFlags = NO_FLAGS) -> str | None:
    """The one line for a run that needed more memory than the machine has (or an array larger
    than JAX can index), found anywhere in ``error``'s chain of causes; None for any other error.

    It names the memory that ran out (the device's, as JAX reports it, or the host's for a
    ``MemoryError``), its size, the bytes asked for when the error says, and the fix: lower the
    batch or the model's size, naming the run's ``flags`` that set them.
    """
    for cause in _chain(error):
        text = str(cause)
        first = (text.strip().splitlines() or [""])[0].strip()
        first = first if len(first) <= 200 else first[:197] + "..."
        if isinstance(cause, MemoryError) or _OUT_OF_MEMORY.search(text):
            where, limit = _device_memory(host=isinstance(cause, MemoryError))
            notes = [f"{_size(limit)} in all"] if limit else []
            requested = _requested(text)
            if requested:
                notes.append(f"{requested} asked for at once")
            detail = f" ({'; '.join(notes)})" if notes else ""
            return f"out of memory on {where}{detail}: {_fix(flags)}"
        if _TOO_LARGE.search(text):
            where, _ = _device_memory(host=False)
            return f"the run needs an array too large for {where} ({first}): {_fix(flags)}"
    return None


def model_too_large_line(need: int, flags: MemoryFlags = NO_FLAGS) -> str | None:
    """The one line for a model that needs ``need`` bytes of one device's memory, more than
    that device has (the host's memory for the CPU); None where it fits or the size is unknown.
    Names the run's ``flags`` that set the model's size."""
    where, limit = _device_memory(host=False)
    if not limit or need <= limit:
        return None
    return (
        f"the model's parameters and its optimizer's state need at least {_size(need)} on each "
        f"device, more than {where}'s {_size(limit)}: make the model smaller{_size_flags(flags)}"
    )


def missing_module_line(error: BaseException) -> str | None:
    """For a package that vaejax needs but cannot import (anywhere in ``error``'s chain), the
    one line naming it and the fix; None for anything else."""
    for e in _chain(error):
        if isinstance(e, ModuleNotFoundError) and e.name:
            return (
                f"the Python package {e.name!r} is missing (No module named {e.name!r}): install "
                f"vaejax with its dependencies (pip install -e . in a checkout)"
            )
    return None
