"""The command line: typed flags from a config's annotations, one-line errors, flags that do not
apply, and the one line when JAX's backend cannot start or a limit of the machine is reached
(integers beyond int32, memory)."""

from __future__ import annotations

import dataclasses
import errno
import importlib
import logging
import os
import re
from pathlib import Path

import jax
import numpy as np
import pytest

import experiments
from tests.helpers import run_python
from vaejax import cli, errors, flags, io
from vaejax.runs.config import Applies, RunConfig, applies_when, config_field


@dataclasses.dataclass(frozen=True)
class Toy:
    count: int = config_field(3, "a count")
    rate: float = config_field(0.5, "a rate (100% sure)")
    name: str = config_field("a", "a name", ("a", "b", "c"))
    text: str = config_field("", "free text")
    flag: bool = config_field(False, "a switch")
    ints: tuple[int, ...] = config_field((1, 2, 2), "channel multipliers")
    floats: tuple[float, ...] = config_field((-2.0, 0.5), "strengths")
    words: tuple[str, ...] = config_field(("x",), "words", ("x", "y", "z"))
    lr: float | None = config_field(None, "learning rate (auto: the loss's own)")
    size: int | None = config_field(None, "a size (auto: the model's own)")
    model: str = config_field("mlp", "model", ("mlp", "conv"))
    hidden: int = config_field(400, "hidden width", applies=applies_when(model="mlp"))
    decay: float = config_field(0.99, "EMA decay", applies=applies_when(flag=True))
    variance: float = config_field(
        1.0, "variance", applies=("with --name b", lambda c: c.name == "b")
    )
    depth: int = config_field(2, "depth", applies=lambda c: c.count > 1)


def parse(argv, defaults=Toy()):
    return flags.parse_config(defaults, argv)


def one_line_error(capsys, argv, defaults=Toy()) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv, defaults)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    assert captured.err.endswith(" (see --help)\n")
    return captured.err.strip()


def test_no_flags_give_the_defaults():
    assert parse([]) == Toy()
    custom = Toy(flag=True, ints=(4,), lr=1e-4)
    assert parse([], custom) == custom


@pytest.mark.parametrize(
    "argv,field,value",
    [
        (["--count", "7"], "count", 7),
        (["--count=-3"], "count", -3),
        (["--rate", "1"], "rate", 1.0),
        (["--rate", "-1e-3"], "rate", -1e-3),
        (["--name", "b"], "name", "b"),
        (["--text", " two words "], "text", " two words "),
        (["--flag"], "flag", True),
        (["--flag", "--no-flag"], "flag", False),
        (["--ints", "4,5"], "ints", (4, 5)),
        (["--ints=1, 2"], "ints", (1, 2)),
        (["--ints", ""], "ints", ()),
        (["--floats", "-2,-1,0.5"], "floats", (-2.0, -1.0, 0.5)),
        (["--floats", "0.1"], "floats", (0.1,)),
        (["--words", "y,z"], "words", ("y", "z")),
        (["--lr", "2e-4"], "lr", 2e-4),
        (["--lr", "auto"], "lr", None),
        (["--lr", ""], "lr", None),
        (["--size", "5"], "size", 5),
        (["--size", "AUTO"], "size", None),
    ],
)
def test_each_type_round_trips(argv, field, value):
    config = parse(argv)
    assert getattr(config, field) == value
    assert type(getattr(config, field)) is type(value)
    if isinstance(value, tuple):
        assert all(type(v) is type(getattr(Toy(), field)[0]) for v in value)
    assert config == dataclasses.replace(Toy(), **{field: value})


def test_optional_bools_and_tuples_take_values(capsys):
    @dataclasses.dataclass(frozen=True)
    class Maybe:
        shuffle: bool | None = config_field(None, "shuffle (auto: when training)")
        steps: tuple[int, ...] | None = config_field(None, "steps (auto: the schedule's)")

    assert parse(["--shuffle", "true", "--steps", "1,2"], Maybe()) == Maybe(True, (1, 2))
    assert parse(["--shuffle", "off", "--steps", "auto"], Maybe(steps=(3,))) == Maybe(False)
    with pytest.raises(SystemExit):
        parse(["--shuffle", "maybe"], Maybe())
    assert capsys.readouterr().err == (
        "error: argument --shuffle: invalid value: 'maybe'; expected true or false or auto, e.g. "
        "--shuffle true (see --help)\n"
    )


def test_integers_up_to_int32_pass():
    assert parse(["--count", "2147483647", "--ints=-2147483648,0"]) == Toy(
        count=2**31 - 1, ints=(-(2**31), 0)
    )
    assert parse(["--size", "000000000000000000007"]).size == 7


def test_an_optional_default_is_overridden_and_reset():
    assert parse(["--lr", "auto"], Toy(lr=1e-3)).lr is None
    assert parse(["--no-flag"], Toy(flag=True)).flag is False


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["--count", "1.5"],
            "argument --count: invalid int value: '1.5'; expected an integer, e.g. --count 3",
        ),
        (
            ["--rate", "x"],
            "argument --rate: invalid float value: 'x'; expected a number, e.g. --rate 0.5",
        ),
        (["--name", "d"], "argument --name: invalid choice: 'd' (choose from 'a', 'b', 'c')"),
        (["--flag=yes"], "argument --flag/--no-flag: ignored explicit argument 'yes'"),
        (
            ["--ints", "1,x"],
            "argument --ints: invalid value: '1,x'; expected comma-separated "
            "integers, e.g. --ints 1,2,2",
        ),
        (
            ["--ints", "1,,2"],
            "argument --ints: invalid value: '1,,2' (an empty item); expected "
            "comma-separated integers, e.g. --ints 1,2,2",
        ),
        (
            ["--floats", "0.1,abc"],
            "argument --floats: invalid value: '0.1,abc'; expected "
            "comma-separated numbers, e.g. --floats -2.0,0.5",
        ),
        (
            ["--words", "x,w"],
            "argument --words: invalid choice: 'w' in 'x,w' (choose from 'x', 'y', 'z')",
        ),
        (
            ["--lr", "fast"],
            "argument --lr: invalid value: 'fast'; expected a number or auto, e.g. --lr 0.1",
        ),
        (
            ["--size", "2.5"],
            "argument --size: invalid value: '2.5'; expected an integer or auto, e.g. --size 1",
        ),
        (
            ["--count", "100000000000000000000"],
            "argument --count: 100000000000000000000 is beyond the largest integer vaejax "
            "takes (2147483647)",
        ),
        (
            ["--count=-2147483649"],
            "argument --count: -2147483649 is beyond the smallest integer vaejax takes "
            "(-2147483648)",
        ),
        (
            ["--ints", "1,2147483648"],
            "argument --ints: 2147483648 is beyond the largest integer vaejax takes (2147483647)",
        ),
        (
            ["--size", "9" * 5000],
            "argument --size: 99999999999999999999... (5000 digits) is beyond the largest "
            "integer vaejax takes (2147483647)",
        ),
        (
            ["--process_id", "2147483648"],
            "argument --process_id: 2147483648 is beyond the largest integer vaejax takes "
            "(2147483647)",
        ),
        (["--count"], "argument --count: expected one argument"),
        (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
    ],
)
def test_a_bad_value_is_one_line(capsys, argv, message):
    assert one_line_error(capsys, argv) == f"error: {message} (see --help)"


def test_choices_apply_to_each_element(capsys):
    @dataclasses.dataclass(frozen=True)
    class Classes:
        classes: tuple[int, ...] = config_field((0, 1), "digits", tuple(range(10)))

    assert parse(["--classes", "3,9"], Classes()).classes == (3, 9)
    assert one_line_error(capsys, ["--classes", "3,10"], Classes()) == (
        "error: argument --classes: invalid choice: 10 in '3,10' (choose from 0, 1, 2, 3, 4, 5, "
        "6, 7, 8, 9) (see --help)"
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model", "conv", "--hidden", "300"], "--hidden applies only to --model mlp, not conv"),
        (["--hidden", "400", "--model", "conv"], "--hidden applies only to --model mlp, not conv"),
        (["--decay", "0.9"], "--decay applies only to --flag"),
        (["--variance", "2"], "--variance applies only with --name b"),
        (["--count", "1", "--depth", "3"], "--depth does not apply to these settings"),
    ],
)
def test_a_flag_given_where_it_does_not_apply_is_refused(capsys, argv, message):
    assert one_line_error(capsys, argv) == f"error: {message}: drop it (see --help)"


@pytest.mark.parametrize(
    "argv",
    [
        ["--model", "conv"],  # --hidden not given: its default is never refused
        ["--hidden", "300"],
        ["--model", "mlp", "--hidden", "300"],
        ["--flag", "--decay", "0.9"],
        ["--name", "b", "--variance", "2"],
        ["--count", "1"],
    ],
)
def test_flags_that_apply_or_are_not_given_pass(argv):
    parse(argv)


def test_applies_when_several_settings_and_values():
    applies = applies_when(model=("mlp", "conv"), flag=True)
    assert applies.text == "to --model mlp or conv with --flag"
    assert applies.test(Toy(model="conv", flag=True)) and not applies.test(Toy(model="conv"))
    assert applies.refusal("hidden", Toy(model="conv")) == (
        "--hidden applies only to --model mlp or conv with --flag, not --model conv --no-flag: "
        "drop it"
    )
    assert isinstance(dataclasses.fields(Toy)[-1].metadata["applies"], Applies)
    with pytest.raises(TypeError):
        config_field(1, "x", applies="model == mlp")


def test_help_shows_types_defaults_and_formats():
    text = flags.build_parser(Toy(), "Toy's description.", "toy").format_help()
    for part in (
        "Toy's description.",
        "--flag, --no-flag",
        "(default: --no-flag)",
        "--ints N,...",
        "(default: 1,2,2)",
        "--words {x,y,z},...",
        "--lr LR|auto",
        "(default: auto)",
        "--size SIZE|auto",
        "(100% sure)",
        "(default: 400; applies only to --model mlp)",
        "lists: comma-separated",
        "booleans: --name (true), --no-name (false)",
        "auto (or an empty value): the ",
    ):
        assert part in " ".join(text.split()), part


def test_unsupported_annotations_and_mistyped_defaults_fail_when_building():
    @dataclasses.dataclass(frozen=True)
    class Listy:
        values: list[int] = dataclasses.field(default_factory=list, metadata={"help": "x"})

    @dataclasses.dataclass(frozen=True)
    class Stale:
        multipliers: tuple[int, ...] = config_field("1,2,2", "not converted yet")

    with pytest.raises(TypeError, match="Listy.values: unsupported annotation"):
        flags.build_parser(Listy())
    with pytest.raises(TypeError, match="Stale.multipliers: default '1,2,2' is not comma-sep"):
        flags.build_parser(Stale())


def test_every_experiment_builds_its_command_line():
    folder = Path(experiments.__file__).parent  # the modules that declare a CONFIG only
    configs = [
        importlib.import_module(f"experiments.{path.stem}").CONFIG
        for path in sorted(folder.glob("*.py"))
        if "\nCONFIG = " in path.read_text()
    ]
    assert len(configs) >= 10
    for config in configs:
        flags.build_parser(config).format_help()
        assert flags.parse_config(config, []) == config


@dataclasses.dataclass(frozen=True)
class Tiny(RunConfig):
    width: int = config_field(8, "width", applies=applies_when(dataset="mnist"))
    sizes: tuple[int, ...] = config_field((1, 2), "sizes")


def test_main_runs_the_parsed_config(tmp_path, capsys):
    seen = []
    argv = ["--sizes", "3,4", "--workdir", str(tmp_path / "{dataset}"), "--width", "4"]
    assert (
        cli.main(Tiny(), argv=argv, run=lambda config, workdir: seen.append((config, workdir))) == 0
    )
    assert seen == [
        (Tiny(sizes=(3, 4), width=4, workdir=str(tmp_path / "{dataset}")), tmp_path / "mnist")
    ]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(Tiny(), argv=["--dataset", "fashion_mnist", "--width", "4"], run=seen.append)
    assert exit_info.value.code == 2 and len(seen) == 1
    assert capsys.readouterr().err == (
        "error: --width applies only to --dataset mnist, not fashion_mnist: drop it (see --help)\n"
    )


def test_backend_error_names_the_fix(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    line = cli.backend_error(
        RuntimeError(
            "Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so (set "
            "JAX_PLATFORMS='' to automatically choose an available backend)\nmore"
        )
    )
    assert line == (
        "JAX could not start the tpu backend (INTERNAL: Failed to open libtpu.so): "
        'install the matching jaxlib, e.g. pip install -U "jax[cuda12]" (GPU) or '
        '"jax[tpu]" (TPU), or unset JAX_PLATFORMS to run on the CPU'
    )
    monkeypatch.delenv("JAX_PLATFORMS")
    assert "set JAX_PLATFORMS=cpu" in cli.backend_error(AssertionError())
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert cli.backend_error(
        RuntimeError(
            "Unable to initialize backend 'cuda': Backend 'cuda' is not in the list of "
            "known backends: ['cpu']. (set JAX_PLATFORMS='' to ...)"
        ),
        [
            "Exception when calling jax_plugins.xla_cuda13.initialize(): operation cuInit(0) "
            "failed: CUDA_ERROR_NO_DEVICE"
        ],
    ).startswith(
        "JAX could not start the cuda backend (Backend 'cuda' is not in the list of known "
        "backends: ['cpu']; Exception when calling jax_plugins.xla_cuda13.initialize(): "
        "operation cuInit(0) failed: CUDA_ERROR_NO_DEVICE): install the matching jaxlib"
    )


def test_check_backend_holds_back_jax_logs_and_passes_them_on(monkeypatch, caplog):
    def failing_devices():
        try:
            raise RuntimeError("operation cuInit(0) failed: CUDA_ERROR_NO_DEVICE")
        except RuntimeError:
            logging.getLogger("jax._src.xla_bridge").exception(
                "Exception when calling jax_plugins.xla_cuda13.initialize()"
            )
        raise AssertionError

    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    monkeypatch.setattr(jax, "devices", failing_devices)
    with pytest.raises(
        errors.ConfigError,
        match=r"^JAX could not start the cuda backend \(no "
        r"cuda device or plugin found; Exception when calling jax_plugins\."
        r"xla_cuda13\.initialize\(\): operation cuInit\(0\) failed: "
        r"CUDA_ERROR_NO_DEVICE\): install",
    ):
        cli.check_backend()
    assert not caplog.records  # held back: no traceback before the one line

    def warning_devices():
        logging.getLogger("jax._src.xla_bridge").warning("falling back to cpu")
        return []

    monkeypatch.setattr(jax, "devices", warning_devices)
    cli.check_backend()
    assert [record.getMessage() for record in caplog.records] == ["falling back to cpu"]


_PLATFORMS = {device.platform for device in jax.devices()}


@pytest.mark.parametrize(  # no plugin (an assertion in jax), no libtpu, a platform jax lacks
    "platform,present", [("cuda", "gpu"), ("tpu", "tpu"), ("rocm", "gpu")]
)
def test_a_backend_that_cannot_start_is_one_line(tmp_path, platform, present):
    if present in _PLATFORMS:
        pytest.skip(f"a {present} is present: JAX_PLATFORMS={platform} may start")
    workdir = tmp_path / "w"
    done = run_python(
        ["-m", "experiments.vae_mnist", "--epochs", "1", "--workdir", str(workdir)],
        env={"JAX_PLATFORMS": platform},
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith(f"error: JAX could not start the {platform} backend (")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert 'pip install -U "jax[cuda12]"' in done.stderr
    assert not workdir.exists()


def one_line_failure(args) -> str:
    """Runs ``python args...`` on the CPU; returns its one line of stderr, after checking that
    it failed with exit status 2 and printed nothing else there."""
    done = run_python(args, env={"JAX_PLATFORMS": "cpu"}, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stderr.strip()


def test_an_integer_beyond_int32_is_one_line(tmp_path):
    workdir = tmp_path / "w"
    line = one_line_failure(
        ["-m", "experiments.vae_mnist", "--epochs", "100000000000000000000", "--workdir", workdir]
    )
    assert line == (
        "error: argument --epochs: 100000000000000000000 is beyond the largest integer vaejax "
        "takes (2147483647) (see --help)"
    )
    assert not workdir.exists()


def test_training_steps_beyond_int32_are_one_line(tmp_path):
    workdir = tmp_path / "w"
    args = ["--epochs", "2147483647", "--train_examples", "500", "--batch_size", "50"]
    line = one_line_failure(["-m", "experiments.vae_mnist", *args, "--workdir", workdir])
    assert line == (
        "error: --epochs 2147483647 x 10 steps per epoch = 21474836470 training steps, beyond "
        "the most vaejax takes (2147483647): lower --epochs"
    )
    assert not workdir.exists()


def test_machine_limit_message_walks_the_chain_and_names_the_fix():
    with pytest.raises(MemoryError) as host:  # numpy: more than any machine can map
        np.empty(2**46, np.float32)
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = host.value
    line = errors.machine_limit_message(
        wrapped, errors.MemoryFlags(("batch_size",), ("latent_dim", "hidden_dim"))
    )
    assert re.fullmatch(
        r"out of memory on the host \(\d+\.\d [KMGT]iB in all; 256\.0 TiB asked for at once\): "
        r"lower --batch_size, or the model's size \(--latent_dim, --hidden_dim\)",
        line,
    ), line
    assert errors.machine_limit_message(ValueError("bad")) is None
    line = errors.machine_limit_message(RuntimeError("RESOURCE_EXHAUSTED: no bytes said"))
    assert line.startswith("out of memory on the ")  # JAX's device: its kind and memory
    assert line.endswith(": lower the batch size, or the model's size")  # no flags named


def test_a_missing_package_is_one_line_naming_it():
    try:
        import vaejax_no_such_package  # noqa: F401
    except ModuleNotFoundError as e:
        wrapped = RuntimeError("reading the data")
        wrapped.__cause__ = e
    assert errors.missing_module_line(wrapped).startswith(
        "the Python package 'vaejax_no_such_package' is missing"
    )
    assert errors.missing_module_line(ImportError("cannot import name 'x'")) is None


_ALLOCATE = """
import sys
import jax.numpy as jnp
from experiments.vae_mnist import CONFIG
from vaejax import cli

def run(config, workdir):  # 2**48 bytes: more than any machine holds, or can map
    jnp.zeros((config.latent_dim, 2**22), jnp.float32).block_until_ready()

sys.exit(cli.main(CONFIG, argv=sys.argv[1:], run=run))
"""


def test_out_of_memory_is_one_line(tmp_path):
    line = one_line_failure(
        ["-c", _ALLOCATE, "--latent_dim", str(2**24), "--workdir", tmp_path / "w"]
    )
    assert re.fullmatch(
        r"error: out of memory on the cpu \(\d+\.\d [KMGT]iB in all; 256\.0 TiB asked for "
        r"at once\): lower --batch_size or --eval_batch_size, or the model's size "
        r"\(--latent_dim, --hidden_dim\)",
        line,
    ), line


_SMALL_MACHINE = """
import sys
from experiments.vae_mnist import CONFIG
from vaejax import cli, errors

errors._device_memory = lambda host: ("the cpu", 64 * 2**20)  # a machine of 64 MiB
sys.exit(cli.main(CONFIG, argv=sys.argv[1:]))
"""


def test_a_model_larger_than_the_memory_is_one_line_before_it_is_made(
    tmp_path, mnist_tfds_dir, mnist_raw_dir
):
    """12,648,784 parameters (--latent_dim 10000): 50.6 MB, twice over with the optimizer's
    state, on a machine of 64 MiB. Refused before anything is allocated (a model that fills the
    memory array by array would be killed by the kernel, with no line)."""
    data_flags = ["--data_dir", mnist_tfds_dir, "--raw_data_dir", mnist_raw_dir]
    workdir = tmp_path / "w"
    args = ["--latent_dim", "10000", "--train_examples", "256", "--workdir", workdir, *data_flags]
    line = one_line_failure(["-c", _SMALL_MACHINE, *args])
    assert line == (
        "error: the model's parameters and its optimizer's state need at least 96.5 MiB on each "
        "device, more than the cpu's 64.0 MiB: make the model smaller (--latent_dim, "
        "--hidden_dim)"
    )
    assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists()
    assert errors.model_too_large_line(64 * 2**50) is not None  # more than any machine
    assert errors.model_too_large_line(2 * 652_824 * 4) is None  # the default VAE fits


def test_an_array_too_large_for_jax_is_one_line(tmp_path, mnist_tfds_dir, mnist_raw_dir):
    with pytest.raises(NotImplementedError) as error:  # JAX refuses it before allocating
        jax.random.normal(jax.random.key(0), (2**33, 2**33))
    line = errors.machine_limit_message(
        error.value, errors.MemoryFlags(("batch_size",), ("width",))
    )
    assert line.startswith(
        "the run needs an array too large for the cpu (random bits array of size exceeding "
        "2 ** 64): lower --batch_size, or the model's size (--width)"
    ), line
    # a GAN at --width 2000000000 (its first kernel alone would be such an array) is refused
    # earlier still, from its parameters' shapes
    data_flags = ["--data_dir", mnist_tfds_dir, "--raw_data_dir", mnist_raw_dir]
    args = ["--width", "2000000000", "--workdir", tmp_path / "w", *data_flags]
    line = one_line_failure(["-m", "experiments.gan_mnist", *args])
    assert re.fullmatch(
        r"error: the model's parameters and its optimizer's state need at least [\d.]+ EiB on "
        r"each device, more than the cpu's [\d.]+ [KMGT]iB: make the model smaller \(--width, "
        r"--noise_dim\)",
        line,
    ), line


@pytest.mark.parametrize(
    "before, after",
    [
        (None, "--xla_gpu_deterministic_ops=true"),
        (
            "--xla_force_host_platform_device_count=8",
            "--xla_force_host_platform_device_count=8 --xla_gpu_deterministic_ops=true",
        ),
        ("--xla_gpu_deterministic_ops=false", "--xla_gpu_deterministic_ops=false"),
    ],
)
def test_deterministic_gpu_kernels_are_asked_for_unless_set(monkeypatch, before, after):
    if before is None:
        monkeypatch.delenv("XLA_FLAGS", raising=False)
    else:
        monkeypatch.setenv("XLA_FLAGS", before)
    cli.ask_for_deterministic_gpu()
    assert os.environ["XLA_FLAGS"] == after


def test_an_empty_workdir_is_one_line(capsys):
    assert cli.main(Tiny(), argv=["--workdir", ""], run=lambda config, workdir: None) == 2
    assert capsys.readouterr().err == "error: --workdir must name a folder, got an empty string\n"


def test_a_write_on_a_full_disk_is_one_line_naming_the_workdir(tmp_path, capsys):
    def write_a_picture(config, workdir):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(workdir / "sample_1.png"))
        except OSError as e:  # as the PNG writer's error arrives, wrapped by a caller
            raise RuntimeError("could not write the pictures") from e

    workdir = tmp_path / "run"
    assert cli.main(Tiny(), argv=["--workdir", str(workdir)], run=write_a_picture) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: no space left on the device of {workdir} (")
    assert "MB free): free some space and rerun the same command to start again" in err
    assert "(nothing was saved yet)" in err and not workdir.exists()  # the lock's folder removed


def test_a_file_the_run_cannot_use_is_one_line_naming_it(tmp_path, capsys):
    workdir = tmp_path / "run"
    (workdir / "metrics.jsonl").mkdir(parents=True)  # a folder where the journal should be

    def write_the_journal(config, workdir):
        io.atomic_write_bytes(workdir / "metrics.jsonl", b"{}\n")

    assert cli.main(Tiny(), argv=["--workdir", str(workdir)], run=write_the_journal) == 2
    assert capsys.readouterr().err == (
        f"error: cannot use {workdir / 'metrics.jsonl'} (Is a directory): move it away or fix "
        f"it, then rerun the same command to start again (nothing was saved yet)\n"
    )


@pytest.mark.parametrize("value", ["off", ""])
def test_the_compilation_cache_can_be_turned_off(monkeypatch, value):
    monkeypatch.setenv(cli.COMPILATION_CACHE_ENV, value)
    before = jax.config.jax_compilation_cache_dir
    try:
        assert cli.use_compilation_cache() is None
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_an_unwritable_home_runs_without_a_compilation_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(cli.COMPILATION_CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "file"))
    (tmp_path / "file").write_text("a file where the home folder should be")
    before = jax.config.jax_compilation_cache_dir
    try:
        assert cli.use_compilation_cache() is None
        assert jax.config.jax_compilation_cache_dir == before
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
