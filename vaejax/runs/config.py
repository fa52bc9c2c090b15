"""The config of a run: fields, the shared settings, their validation, and the data they name."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from vaejax import data, models, sharding
from vaejax.errors import LARGEST_INT, ConfigError
from vaejax.training import schedules, step, stream


def flag_text(name: str, value: Any) -> str:
    """How the command line spells ``--name value``: '--model conv', '--ema' / '--no-ema' for a
    bool, '--multipliers 1,2,2' for a tuple, '--gan_lr auto' for None."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} {value_text(value)}"


def value_text(value: Any) -> str:
    """A value as the command line spells it: tuples comma-separated, None as 'auto'."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(value_text(v) for v in value)
    return str(value)


@dataclasses.dataclass(frozen=True)
class Applies:
    """When a config field applies to the other settings: ``test(config)`` is True.

    The command line refuses a flag given explicitly whose field does not apply to the final
    config, with '--<field> applies only <text>, not <the settings named in ``names``>: drop it'
    (without ``text``: '--<field> does not apply to these settings: drop it'). Build one with
    :func:`applies_when`, or pass ``config_field(applies=...)`` a predicate or a
    ``(text, predicate)`` pair.
    """

    test: Callable[[Any], bool]
    text: str = ""  # e.g. 'to --model mlp'; shown in --help as '(applies only to --model mlp)'
    names: tuple[str, ...] = ()  # the fields ``test`` reads: their values are shown when refused

    def refusal(self, name: str, config: Any) -> str:
        """The one-line refusal of ``--name`` under ``config`` (where ``test`` is False)."""
        head = (
            f"--{name} applies only {self.text}"
            if self.text
            else f"--{name} does not apply to these settings"
        )
        if len(self.names) == 1:  # '--hidden_dim applies only to --model mlp, not conv'
            if not isinstance(getattr(config, self.names[0]), bool):  # not '--ema, not --no-ema'
                head += f", not {value_text(getattr(config, self.names[0]))}"
        elif self.names:
            head += ", not " + " ".join(flag_text(n, getattr(config, n)) for n in self.names)
        return f"{head}: drop it"


def applies_when(**settings: Any) -> Applies:
    """The field applies when each named field has the given value, or one of a tuple of values:
    ``applies_when(model="mlp")``, ``applies_when(likelihood=("gaussian", "laplace"))``,
    ``applies_when(ema=True)``. Refused: '--hidden_dim applies only to --model mlp, not conv:
    drop it'."""
    if not settings:
        raise TypeError("applies_when needs at least one setting, e.g. model='mlp'")
    allowed = {
        name: value if isinstance(value, tuple) else (value,) for name, value in settings.items()
    }
    text = " with ".join(
        " or ".join(flag_text(name, v) for v in values)
        if isinstance(values[0], bool)
        else f"--{name} " + " or ".join(value_text(v) for v in values)
        for name, values in allowed.items()
    )
    return Applies(
        lambda config: all(getattr(config, name) in values for name, values in allowed.items()),
        "to " + text,
        tuple(settings),
    )


def config_field(
    default,
    help: str,
    choices: Sequence | None = None,
    resume: bool = False,
    applies: Applies | Callable[[Any], bool] | tuple[str, Callable[[Any], bool]] | None = None,
):
    """A config field: its ``--flag`` takes the type of the field's annotation (int, float, str,
    bool, tuple[int | float | str, ...], or any of these ``| None``; see :mod:`vaejax.flags`).

    ``choices``: the allowed values (of each element, for a tuple). ``resume=True``: it may
    differ when a run is resumed (it does not change what is trained, e.g. the workdir, or
    extends it, e.g. the epochs). ``applies``: when the field applies to the other settings, an
    :class:`Applies` (see :func:`applies_when`), a ``(config) -> bool`` predicate, or a
    ``(text, predicate)`` pair such as ``("with --likelihood gaussian", lambda c: ...)``; a flag
    given explicitly where it does not apply is refused.
    """
    if applies is not None and not isinstance(applies, Applies):
        if isinstance(applies, tuple) and len(applies) == 2 and callable(applies[1]):
            applies = Applies(applies[1], applies[0])
        elif callable(applies):
            applies = Applies(applies)
        else:
            raise TypeError(
                f"applies must be an Applies, a predicate or a (text, predicate) "
                f"pair, got {applies!r}"
            )
    return dataclasses.field(
        default=default,
        metadata={"help": help, "choices": choices, "resume": resume, "applies": applies},
    )


def judge_field():
    """The ``classifier_workdir`` field of a generative model's config."""
    return config_field(
        "workdirs/classifier_{dataset}",
        "the classifier "
        "(experiments.classifier) behind the per-epoch FID / Inception-score "
        "analogue / mode coverage",
        resume=True,
    )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What every experiment shares: the data, the optimizer, the workdir and its checkpoints.

    An experiment's config subclasses it with its own fields; a subclass may redeclare a field
    to change its default.
    """

    dataset: str = config_field(
        "mnist",
        "dataset: mnist, fashion_mnist, cifar10, svhn_cropped, celeb_a, another tfds image "
        "dataset prepared in --data_dir, or folder:PATH (a folder of images, class sub-folders "
        "as labels)",
    )
    image_size: int | None = config_field(
        None,
        "the models' image size (auto: the data's own; the conv autoencoders pad 28x28 data to "
        "32x32); 28x28 data are zero-padded to 32, other sizes centre-cropped and resized; a "
        "folder: dataset is prepared at this size (auto: 64)",
    )
    batch_size: int = config_field(128, "training batch size (a multiple of the device count)")
    epochs: int = config_field(10, "training epochs", resume=True)
    learning_rate: float = config_field(1e-3, "Adam learning rate")
    adam_eps: float = config_field(1e-8, "Adam epsilon")
    lr_schedule: str = config_field(
        "constant",
        "learning-rate schedule: constant, cosine (down to 0 over the run's steps) or burda "
        "(Burda et al.'s --learning_rate x 10^(-i/7) for 3^i epochs, i = 0..7)",
        schedules.SCHEDULES,
    )
    warmup_steps: int = config_field(
        0, "linear learning-rate warmup from 0 over N steps (0 = none)"
    )
    seed: int = config_field(1, "random seed: initialization, data order, noise")
    train_examples: int = config_field(0, "train on the first N training images only (0 = all)")
    test_examples: int = config_field(
        0, "evaluate on the first N test images only (0 = all)", resume=True
    )
    eval_batch_size: int = config_field(
        1000,
        "evaluation batch size (a multiple of the device count; fixed for a run: the "
        "evaluation's random draws are made per batch)",
    )
    data_dir: str = config_field(
        "",
        "tfds data directory, local or gs://... (read through a local mirror; empty: "
        "$TFDS_DATA_DIR or ~/tensorflow_datasets)",
        resume=True,
    )
    raw_data_dir: str = config_field(
        "",
        f"folder with the dataset's raw files, for offline use, local or gs://... "
        f"(empty: ${data.RAW_DATA_DIR_ENV}, then tfds' manual dir "
        f"<data_dir>/downloads/manual, then download)",
        resume=True,
    )
    workdir: str = config_field(
        "workdirs/run",
        "where metrics, images, checkpoints and "
        "parameters go; rerunning with the same workdir resumes",
        resume=True,
    )
    checkpoint_every: int = config_field(
        500,
        "save a checkpoint every N steps (also at the end and on SIGTERM/SIGINT/SIGHUP)",
        resume=True,
    )
    keep_checkpoints: int = config_field(3, "keep the N newest checkpoints", resume=True)
    nonfinite: str = config_field(
        "stop",
        "a step with a non-finite loss or gradient: stop (name "
        "the last good checkpoint) or skip it",
        step.NONFINITE_POLICIES,
        resume=True,
    )
    dtype: str = config_field(
        "float32",
        "compute dtype: float32, or bfloat16 (parameters, optimizer state, losses and metrics "
        "stay float32)",
        tuple(models.DTYPES),
    )
    data_on_device: str = config_field(
        "auto",
        "on: the training set on every device for the whole run; off: streamed from the host, "
        "each device holding its part of the batches in flight; auto: on when one copy takes "
        "at most a quarter of a device's memory (the same batches and parameters either way)",
        stream.PLACEMENTS,
        resume=True,
    )
    damaged_checkpoints: str = config_field(
        "stop",
        "a checkpoint that fails its checksums: stop (one error line, nothing changed) or "
        "set_aside (move it into <workdir>/damaged_checkpoints/ and resume from the newest "
        "intact one)",
        ("stop", "set_aside"),
        resume=True,
    )


def check_positive(config, *names: str) -> None:
    """Raises :class:`ConfigError` unless each named field is > 0 (and finite); a None (the
    field's automatic setting, resolved elsewhere) passes."""
    for name in names:
        value = getattr(config, name)
        if value is None:
            continue
        if not value > 0 or not np.isfinite(value):
            kind = "a positive number" if isinstance(value, float) else "positive"
            raise ConfigError(f"--{name} must be {kind}, got {value}")


def validate_run(config: RunConfig, num_devices: int) -> None:
    """Raises :class:`ConfigError` for the first shared setting that cannot work (and for any
    field of a subclass outside its choices)."""
    check_positive(
        config,
        "batch_size",
        "epochs",
        "eval_batch_size",
        "checkpoint_every",
        "keep_checkpoints",
        "learning_rate",
        "adam_eps",
    )
    if not 0 <= config.seed < 2**31:
        raise ConfigError(f"--seed must be between 0 and {2**31 - 1}, got {config.seed}")
    if getattr(config, "warmup_steps", 0) < 0:
        raise ConfigError(f"--warmup_steps must be >= 0, got {config.warmup_steps}")
    for field in dataclasses.fields(config):
        choices = field.metadata.get("choices")
        value = getattr(config, field.name)
        if not choices or value is None:  # None: the field's automatic setting
            continue
        for item in value if isinstance(value, tuple) else (value,):
            if item not in choices:
                raise ConfigError(
                    f"--{field.name} must be one of {', '.join(map(str, choices))}, got {item!r}"
                )
    if config.image_size is not None and not 8 <= config.image_size <= 1024:
        raise ConfigError(f"--image_size must be between 8 and 1024, got {config.image_size}")
    spec = data_spec(config)
    for split in ("train", "test"):
        n_available = spec.num_examples[split]
        if not 0 <= getattr(config, f"{split}_examples") <= n_available:
            raise ConfigError(
                f"--{split}_examples must be between 0 (all) and {n_available}, "
                f"got {getattr(config, f'{split}_examples')}"
            )
    n_available = spec.num_examples["train"]
    for name in ("batch_size", "eval_batch_size"):
        try:
            sharding.check_batch_size(getattr(config, name), num_devices, f"--{name}")
        except ValueError as e:
            raise ConfigError(str(e)) from None
    n_train = config.train_examples or n_available
    if config.batch_size > n_train:
        raise ConfigError(
            f"--batch_size {config.batch_size} exceeds the {n_train} training "
            f"images: lower it or raise --train_examples"
        )
    per_epoch = n_train // config.batch_size
    if config.epochs * per_epoch > LARGEST_INT:  # the step counter is an int32
        raise ConfigError(
            f"--epochs {config.epochs} x {per_epoch} steps per epoch = "
            f"{config.epochs * per_epoch} training steps, beyond the most vaejax takes "
            f"({LARGEST_INT}): lower --epochs"
        )


def resumable_fields(config_class: type) -> tuple[str, ...]:
    """Fields of ``config_class`` that may change when a run is resumed."""
    return tuple(f.name for f in dataclasses.fields(config_class) if f.metadata.get("resume"))


def data_spec(config: RunConfig):
    """The spec of ``config.dataset`` (:func:`vaejax.data.dataset_spec`): its delivered
    ``image_shape``, classes, attributes and split sizes."""
    size = getattr(config, "image_size", None)  # configs of kinds that do not train lack it
    return data.dataset_spec(config.dataset, config.data_dir or None, size)


def image_shape(config: RunConfig, padded_size: int | None = None) -> tuple[int, int, int]:
    """(S, S, C): the images the models see. S is ``--image_size``, else the data's own size,
    except that 28x28 data go to ``padded_size`` when given (the conv autoencoders: 32); C is
    the data's channels."""
    height, _, channels = data_spec(config).image_shape
    size = config.image_size or (padded_size if padded_size and height == 28 else height)
    return (size, size, channels)


def in_dtype(config, model):
    """``model`` computing in ``config.dtype`` (:func:`vaejax.models.compute_in`)."""
    return models.compute_in(model, config.dtype)


def check_image_size(size: int, allowed: Sequence[int] | Callable[[int], bool], model: str):
    """Raises :class:`ConfigError` unless ``size`` is one the model takes."""
    fits = allowed(size) if callable(allowed) else size in allowed
    if not fits:
        sizes = "" if callable(allowed) else f" ({', '.join(map(str, allowed))})"
        raise ConfigError(
            f"{model} does not take {size}x{size} images{sizes}: pass another --image_size"
        )


def require_labels(config: RunConfig, what: str) -> None:
    """Raises :class:`ConfigError` when the data have no class labels (``what`` needs them)."""
    if data_spec(config).num_classes < 2:
        raise ConfigError(
            f"{what} needs class labels, and {config.dataset} has none: choose a dataset with "
            f"labels (a folder: dataset takes its sub-folders as classes)"
        )


def load_data(
    config: RunConfig, binarization: str = "none", size: int | None = None
) -> tuple[data.ImageSplit, data.ImageSplit]:
    """Train and test splits as uint8 arrays, after the host side of the binarization protocol.

    ``size``: the models' image size (see :func:`image_shape`); images of another size are
    centre-cropped and resized to it here, once (28x28 images for 32x32 models are padded on
    the device instead)."""
    kwargs = dict(
        data_dir=config.data_dir or None,
        raw_data_dir=config.raw_data_dir or None,
        image_size=getattr(config, "image_size", None),
    )
    train = data.take(data.load_split(config.dataset, "train", **kwargs), config.train_examples)
    test = data.load_split(config.dataset, "test", **kwargs)
    test = data.apply_binarization_protocol(test, binarization, train=False)
    # after the protocol: the same test images whatever their number
    test = data.take(test, getattr(config, "test_examples", 0))
    train = data.apply_binarization_protocol(train, binarization, train=True)
    size = size or kwargs["image_size"]
    if size and size != train.images.shape[1] and not (train.images.shape[1] == 28 == size - 4):
        train, test = (s._replace(images=data.fit_to_size(s.images, size)) for s in (train, test))
    return train, test
