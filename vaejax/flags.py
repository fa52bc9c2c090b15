"""The typed flags of every experiment's command line, generated from the config dataclass.

Each field of the config becomes ``--<field>``, typed by the field's annotation:

* ``int``, ``float``, ``str``: ``--latent_dim 20``;
* ``bool``: ``--ema`` / ``--no-ema``;
* ``tuple[int, ...]``, ``tuple[float, ...]``, ``tuple[str, ...]``: comma-separated,
  ``--multipliers 1,2,2`` (``--strengths -2,-1,0`` needs no '='; an empty value is the empty
  tuple); choices apply to each element; an integer beyond int32 (what JAX computes in) is
  refused, naming the limit (:data:`vaejax.errors.LARGEST_INT`);
* ``X | None`` (``Optional[X]``): ``auto`` (or an empty value) gives None, the field's automatic
  setting; anything else is read as ``X``.

A flag given explicitly whose field does not apply to the final settings (``config_field(...,
applies=...)``) is refused. Every error is one line on stderr, ``error: ... (see --help)``, exit
status 2. The parser also takes the launch flags (:data:`LAUNCH_FLAGS`, multi-process runs),
which :func:`vaejax.cli.main` acts on.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
import sys
import types
import typing
from typing import Any, NamedTuple, Sequence

from vaejax.errors import ConfigError, beyond_int
from vaejax.runs.config import Applies, RunConfig, flag_text, value_text


class _OneLineParser(argparse.ArgumentParser):
    """Reports a bad command line in one line (argparse prints its whole usage first)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


_KINDS = {
    int: ("an integer", "integers", "N"),
    float: ("a number", "numbers", "X"),
    str: ("a string", "strings", "TEXT"),
    bool: ("true or false", "", ""),
}
_EXAMPLES = {int: (1, 2, 3), float: (0.1, 0.5), str: ("a", "b"), bool: (True,)}
AUTO = "auto"  # the command line's spelling of None, for ``X | None`` fields


class FlagType(NamedTuple):
    """What a field's annotation asks of its flag: values of ``kind`` (int, float, str or bool),
    one or a tuple of them (``sequence``), or None too (``optional``)."""

    kind: type
    sequence: bool = False
    optional: bool = False

    def describe(self) -> str:
        single, plural, _ = _KINDS[self.kind]
        text = f"comma-separated {plural}" if self.sequence else single
        return f"{text} or {AUTO}" if self.optional else text

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` (a default) has this type."""
        if value is None:
            return self.optional

        def one(v: Any) -> bool:
            if self.kind is bool:
                return isinstance(v, bool)
            kinds = (int, float) if self.kind is float else self.kind
            return isinstance(v, kinds) and not isinstance(v, bool)

        if self.sequence:
            return isinstance(value, tuple) and all(one(v) for v in value)
        return one(value)


def flag_type(annotation: Any, where: str = "") -> FlagType:
    """The :class:`FlagType` of a (resolved) annotation; TypeError for an unsupported one."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            annotation, optional = args[0], True
    if annotation in _KINDS:
        return FlagType(annotation, False, optional)
    args = typing.get_args(annotation)
    if (
        typing.get_origin(annotation) is tuple
        and len(args) == 2
        and args[1] is Ellipsis
        and args[0] in _KINDS
        and args[0] is not bool
    ):
        return FlagType(args[0], True, optional)
    raise TypeError(
        f"{where or 'a config field'}: unsupported annotation {annotation!r}; use "
        f"int, float, str, bool, tuple[int | float | str, ...], or one of these "
        f"| None"
    )


@functools.cache
def flag_types(config_class: type) -> dict[str, FlagType]:
    """Each field's :class:`FlagType`, from the class's annotations (resolved once)."""
    hints = typing.get_type_hints(config_class)
    return {
        field.name: flag_type(hints[field.name], f"{config_class.__name__}.{field.name}")
        for field in dataclasses.fields(config_class)
        if field.init
    }


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _one(text: str, kind: type) -> Any:
    if kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError(text)
    if kind is int and beyond_int(text):  # '1e3' is no integer; 10**20 is one too large
        raise argparse.ArgumentTypeError(beyond_int(text))
    return kind(text)  # int('1.5'), float('x'): ValueError


def parse_value(
    text: str, name: str, flag: FlagType, choices: Sequence | None = None, example: Any = None
) -> Any:
    """``text`` as a value of ``--name``: the one place the command line's values are read.

    Raises :class:`argparse.ArgumentTypeError` with a one-line message naming an example, e.g.
    "invalid value: '1,x'; expected comma-separated integers, e.g. --multipliers 1,2,2"."""
    if flag.optional and text.strip().lower() in (AUTO, ""):
        return None
    if example is None or (isinstance(example, tuple) and not example):
        example = (
            tuple(choices)[: 2 if flag.sequence else 1]
            if choices
            else _EXAMPLES[flag.kind][: None if flag.sequence else 1]
        )
        example = tuple(example) if flag.sequence else example[0]

    def fail(why: str = "") -> argparse.ArgumentTypeError:
        scalar = not flag.sequence and not flag.optional and flag.kind in (int, float)
        return argparse.ArgumentTypeError(  # argparse's own words first, then the example
            f"invalid {flag.kind.__name__ + ' ' if scalar else ''}value: {text!r}{why}; "
            f"expected {flag.describe()}, e.g. --{name} {value_text(example)}"
        )

    if flag.sequence:
        if not text.strip():
            values = ()
        else:
            parts = [part.strip() for part in text.split(",")]
            if not all(parts):
                raise fail(" (an empty item)")
            try:
                values = tuple(_one(part, flag.kind) for part in parts)
            except ValueError:
                raise fail() from None
    else:
        try:
            values = _one(text.strip() if flag.kind is not str else text, flag.kind)
        except ValueError:
            raise fail() from None
    if choices:
        for value in values if flag.sequence else (values,):
            if value not in choices:
                raise argparse.ArgumentTypeError(  # as argparse says it, and where
                    f"invalid choice: {value!r}"
                    + (f" in {text!r}" if flag.sequence else "")
                    + f" (choose from {', '.join(map(repr, choices))})"
                )
    return values


def _formats(flags: Sequence[FlagType]) -> str | None:
    """The --help epilog: how lists, booleans and 'auto' are written, for those the config has."""
    lines = []
    if any(flag.sequence for flag in flags):
        lines.append("lists: comma-separated, --name 1,2,2 or --name -2,-1,0 (empty: no items)")
    if any(flag.kind is bool and not flag.optional for flag in flags):
        lines.append("booleans: --name (true), --no-name (false)")
    if any(flag.optional for flag in flags):
        lines.append(
            f"{AUTO} (or an empty value): the automatic value of a setting whose default is {AUTO}"
        )
    return "\n".join(["values:"] + [f"  {line}" for line in lines]) if lines else None


def build_parser(
    defaults: RunConfig, description: str | None = None, prog: str | None = None
) -> argparse.ArgumentParser:
    """A parser with one typed ``--flag`` per config field (see the module's docstring).

    The namespace it parses holds only the config flags given on the command line (each field's
    default is ``defaults``'s, shown in --help), and every launch flag (``LAUNCH_FLAGS``)."""
    types_ = flag_types(type(defaults))
    parser = _OneLineParser(
        prog=prog,
        description=description,
        epilog=_formats(list(types_.values())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    for field in dataclasses.fields(defaults):
        if field.name in types_:
            _check_field(defaults, field, types_[field.name], set(types_))
            _add_field(parser, field, types_[field.name], getattr(defaults, field.name))
    _add_launch_flags(parser)
    return parser


def _check_field(
    defaults: RunConfig, field: dataclasses.Field, flag: FlagType, names: set[str]
) -> None:
    """TypeError for a default that is not of the field's type, or an ``applies`` naming a field
    the config lacks."""
    default = getattr(defaults, field.name)
    if not flag.accepts(default):
        raise TypeError(
            f"{type(defaults).__name__}.{field.name}: default {default!r} is not {flag.describe()}"
        )
    applies = field.metadata.get("applies")
    if isinstance(applies, Applies):
        unknown = [n for n in applies.names if n not in names]
        if unknown:
            raise TypeError(
                f"{type(defaults).__name__}.{field.name}: applies names unknown fields {unknown}"
            )


def _help_text(field: dataclasses.Field, flag: FlagType, default: Any) -> str:
    """The field's help, with its default and where it applies ('%' escaped for argparse)."""
    applies = field.metadata.get("applies")
    notes = []
    if flag.kind is bool and not flag.optional:
        notes.append(f"default: {flag_text(field.name, default)}")
    elif default != "" and default != ():
        notes.append(f"default: {value_text(default)}")
    if isinstance(applies, Applies) and applies.text:
        notes.append(f"applies only {applies.text}")
    help_text = field.metadata.get("help", "") + (f" ({'; '.join(notes)})" if notes else "")
    return help_text.replace("%", "%%")


def _metavar(field: dataclasses.Field, flag: FlagType) -> str:
    """How --help writes the value: the choices, the field's name or the kind, then ',...' for a
    list and '|auto' for an optional value."""
    choices = field.metadata.get("choices")
    metavar = (
        "{" + ",".join(map(str, choices)) + "}"
        if choices
        else field.name.upper()
        if not flag.sequence
        else _KINDS[flag.kind][2]
    )
    if flag.sequence:
        metavar += ",..."
    if flag.optional:
        metavar += f"|{AUTO}"
    return metavar


def _add_field(
    parser: argparse.ArgumentParser, field: dataclasses.Field, flag: FlagType, default: Any
) -> None:
    """``--<field>``: a switch pair for a bool, else a value read by :func:`parse_value`."""
    option, help_text = f"--{field.name}", _help_text(field, flag, default)
    if flag.kind is bool and not flag.optional:
        parser.add_argument(option, action=argparse.BooleanOptionalAction, help=help_text)
        return
    parser.add_argument(
        option,
        metavar=_metavar(field, flag),
        help=help_text,
        type=functools.partial(
            parse_value,
            name=field.name,
            flag=flag,
            choices=field.metadata.get("choices"),
            example=default,
        ),
    )


_NEGATIVE = re.compile(r"-\.?\d")


def _join_negative_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--strengths -2,-1,0`` as ``--strengths=-2,-1,0`` (argparse takes '-2,-1,0' or '-1e-3'
    for a flag of its own)."""
    valued = {
        option
        for action in parser._actions
        if action.nargs is None
        for option in action.option_strings
    }
    args, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            args.extend(argv[i:])
            break
        if arg in valued and i + 1 < len(argv) and _NEGATIVE.match(argv[i + 1]):
            args.append(f"{arg}={argv[i + 1]}")
            i += 2
            continue
        args.append(arg)
        i += 1
    return args


class CommandLine(NamedTuple):
    """A parsed command line: the config, the launch flags, the config flags given."""

    config: Any
    launch: dict[str, Any]
    given: frozenset[str]


def refusal(config: Any, given: Sequence[str]) -> str | None:
    """The one-line refusal of the first flag in ``given`` that does not apply to ``config``
    (its field's ``applies``), or None."""
    metadata = {field.name: field.metadata for field in dataclasses.fields(config)}
    for name in given:
        applies = metadata[name].get("applies")
        if isinstance(applies, Applies) and not applies.test(config):
            return applies.refusal(name, config)
    return None


def parse_command_line(
    defaults: RunConfig,
    argv: Sequence[str] | None = None,
    description: str | None = None,
    prog: str | None = None,
) -> CommandLine:
    """``argv`` (default ``sys.argv[1:]``) over ``defaults``; a bad one exits with one line."""
    parser = build_parser(defaults, description, prog)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = vars(parser.parse_args(_join_negative_values(parser, argv)))
    launch = {name: args.pop(name) for name in LAUNCH_FLAGS}
    try:
        config = dataclasses.replace(defaults, **args)
    except ConfigError as e:  # a config's own __post_init__ check
        parser.error(str(e))
    message = refusal(config, list(args))
    if message:
        parser.error(message)
    return CommandLine(config, launch, frozenset(args))


def parse_config(defaults: RunConfig, argv: Sequence[str] | None = None) -> Any:
    """The config ``argv`` asks for over ``defaults`` (launch flags accepted, left out)."""
    return parse_command_line(defaults, argv).config


LAUNCH_FLAGS = ("distributed", "coordinator_address", "num_processes", "process_id")


def _add_launch_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "multi-process runs (jax.distributed; run the same command in every process)"
    )
    group.add_argument(
        "--distributed",
        action="store_true",
        default=False,
        help="call jax.distributed.initialize() first; on a Cloud TPU slice (or "
        "under SLURM) it finds the other processes by itself",
    )
    group.add_argument(
        "--coordinator_address",
        default="",
        metavar="HOST:PORT",
        help="address of process 0, elsewhere (implies --distributed)",
    )
    group.add_argument(
        "--num_processes",
        type=functools.partial(parse_value, name="num_processes", flag=FlagType(int)),
        default=0,
        metavar="N",
        help="number of processes, with --coordinator_address",
    )
    group.add_argument(
        "--process_id",
        type=functools.partial(parse_value, name="process_id", flag=FlagType(int), example=0),
        default=-1,
        metavar="I",
        help="this process's index 0..N-1, with --coordinator_address",
    )
