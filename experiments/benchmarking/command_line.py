"""The benchmark's command line: its flags by model (the MLP and its sweeps, the conv VAE, the
DCGAN, the DDPM's U-Net), their checks beyond argparse's, and each model's settings from them."""

from __future__ import annotations

import argparse

from experiments.benchmarking.common import MODELS, VARIANTS

ALL_VARIANTS = VARIANTS + ("torch_compiled",)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _sweep(text: str) -> list[int]:
    """A sweep's points, or none at all for ``none``."""
    return [] if text.strip().lower() == "none" else _ints(text)


def _variants(text: str) -> list[str]:
    names = [v for v in text.split(",") if v]
    unknown = [v for v in names if v not in ALL_VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown variant(s) {unknown}: choose from {', '.join(ALL_VARIANTS)}"
        )
    return names


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """``python -m experiments.benchmark``'s parser (``description``: its --help text)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.benchmark",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--raw_data_dir", default="", help="folder with the raw MNIST .gz files")
    parser.add_argument("--data_dir", default="", help="tfds data directory")
    _add_mlp_arguments(parser)
    parser.add_argument(
        "--models",
        default="mlp,conv",
        help="comma-separated, from mlp,conv,dcgan,unet (default: mlp,conv)",
    )
    _add_conv_arguments(parser)
    _add_dcgan_arguments(parser)
    _add_unet_arguments(parser)
    parser.add_argument(
        "--sweep_epochs",
        type=int,
        default=2,
        help="epochs per sweep point, the first the warm-up (default: 2)",
    )
    parser.add_argument(
        "--out", default="benchmark.json", help="JSON results (default: %(default)s)"
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    return parser


def _add_mlp_arguments(parser: argparse.ArgumentParser) -> None:
    """The MLP's settings and its jax_epoch sweeps (over batch sizes, over devices)."""
    parser.add_argument(
        "--epochs",
        type=int,
        default=4,
        help="epochs per variant; the first is the warm-up (default: 4)",
    )
    parser.add_argument("--batch_size", type=int, default=128, help="(default: 128)")
    parser.add_argument(
        "--train_examples",
        type=int,
        default=60000,
        help="the MLP and its sweeps train on the first N images (default: all 60000)",
    )
    parser.add_argument(
        "--variants",
        type=_variants,
        default=list(ALL_VARIANTS),
        help=f"comma-separated, from {','.join(ALL_VARIANTS)} (default: all)",
    )
    parser.add_argument(
        "--batch_sizes",
        type=_sweep,
        default=[128, 256, 512, 1024, 2048, 4096],
        help="jax_epoch batch-size sweep, or none (default: 128,...,4096)",
    )
    parser.add_argument(
        "--devices",
        type=_sweep,
        default=[1, 8],
        help="jax_epoch device counts, or none (CPU: fake devices; default: 1,8)",
    )


def _add_conv_arguments(parser: argparse.ArgumentParser) -> None:
    """The conv VAE's variants, training subset and epochs."""
    parser.add_argument(
        "--conv_variants",
        type=_variants,
        default=["torch_tuned", "jax_step", "jax_epoch"],
        help="variants of the conv model (default: torch_tuned,jax_step,jax_epoch)",
    )
    parser.add_argument(
        "--conv_train_examples",
        type=int,
        default=6000,
        help="the conv model trains on the first N images (default: 6000)",
    )
    parser.add_argument(
        "--conv_epochs",
        type=int,
        default=3,
        help="epochs of the conv model, the first the warm-up (default: 3)",
    )


def _add_dcgan_arguments(parser: argparse.ArgumentParser) -> None:
    """The DCGAN's variants, training subset, epochs, batch, width and image size."""
    parser.add_argument(
        "--dcgan_variants",
        type=_variants,
        default=["torch_tuned", "jax_step", "jax_epoch"],
        help="variants of the dcgan model (default: torch_tuned,jax_step,"
        "jax_epoch; torch_compiled too)",
    )
    parser.add_argument(
        "--dcgan_train_examples",
        type=int,
        default=6400,
        help="the dcgan model trains on the first N images (default: 6400)",
    )
    parser.add_argument(
        "--dcgan_epochs",
        type=int,
        default=3,
        help="epochs of the dcgan model, the first the warm-up (default: 3)",
    )
    parser.add_argument(
        "--dcgan_batch_size",
        type=int,
        default=64,
        help="real images per dcgan update (default: 64, pytorch/examples')",
    )
    parser.add_argument(
        "--dcgan_width",
        type=int,
        default=64,
        help="the dcgan's ngf = ndf (default: 64, pytorch/examples')",
    )
    parser.add_argument(
        "--dcgan_image_size",
        type=int,
        default=28,
        choices=(28, 32),
        help="28, or 32 with MNIST zero-padded (default: 28)",
    )


def _add_unet_arguments(parser: argparse.ArgumentParser) -> None:
    """The DDPM U-Net's variants, training subset, epochs, batch and width."""
    parser.add_argument(
        "--unet_variants",
        type=_variants,
        default=["torch_tuned", "jax_step", "jax_epoch"],
        help="variants of the unet model (default: torch_tuned,jax_step,jax_epoch; "
        "torch_compiled too)",
    )
    parser.add_argument(
        "--unet_train_examples",
        type=int,
        default=1280,
        help="the unet model trains on the first N images (default: 1280)",
    )
    parser.add_argument(
        "--unet_epochs",
        type=int,
        default=3,
        help="epochs of the unet model, the first the warm-up (default: 3)",
    )
    parser.add_argument(
        "--unet_batch_size", type=int, default=128, help="(default: 128, ddpm_mnist's)"
    )
    parser.add_argument(
        "--unet_width",
        type=int,
        default=32,
        help="U-Net channels at full resolution (default: 32, ddpm_mnist's)",
    )


def checked_models(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The models to measure, once every flag is checked (a bad one exits through
    ``parser.error``)."""
    for flag in ("epochs", "sweep_epochs", "conv_epochs", "dcgan_epochs", "unet_epochs"):
        if getattr(args, flag) < 2:
            parser.error(f"--{flag} must be at least 2 (one warm-up, one timed)")
    models = [m for m in args.models.split(",") if m]
    if not models or set(models) - set(MODELS):
        parser.error(f"--models must name some of {', '.join(MODELS)}, got {args.models!r}")
    variant_flags = (("--conv_variants", "conv"), ("--dcgan_variants", "dcgan"))
    for flag, model in variant_flags + (("--unet_variants", "unet"),):
        if "torch_example" in getattr(args, flag[2:]):
            parser.error(
                f"{flag}: torch_example is the pytorch/examples MLP; the {model} "
                "model's PyTorch baseline is torch_tuned"
            )
    largest_batch = max(args.batch_sizes + [args.batch_size])
    if not largest_batch <= args.train_examples <= 60000:
        parser.error(
            f"--train_examples must be between the largest batch size ({largest_batch}) and 60000"
        )
    if not 0 < args.conv_train_examples <= 60000:
        parser.error("--conv_train_examples must be between 1 and 60000")
    if min(args.dcgan_batch_size, args.dcgan_width) < 1:
        parser.error("--dcgan_batch_size and --dcgan_width must be positive")
    if not args.dcgan_batch_size <= args.dcgan_train_examples <= 60000:
        parser.error(
            "--dcgan_train_examples must be between --dcgan_batch_size "
            f"({args.dcgan_batch_size}) and 60000"
        )
    if args.unet_width < 8 or args.unet_width % 8 or args.unet_batch_size < 1:
        parser.error("--unet_width must be a multiple of 8 (GroupNorm's 8 groups), the batch >= 1")
    if not args.unet_batch_size <= args.unet_train_examples <= 60000:
        parser.error(
            f"--unet_train_examples must be between --unet_batch_size ({args.unet_batch_size}) "
            "and 60000"
        )
    return models


def model_runs(args: argparse.Namespace, torch_ok: bool) -> dict[str, dict]:
    """Each model's variants (the PyTorch ones only with torch) and training settings."""

    def keep(names):
        return [v for v in names if v.startswith("jax") or torch_ok]

    return {
        "mlp": dict(
            variants=keep(args.variants),
            batch_size=args.batch_size,
            epochs=args.epochs,
            train_examples=args.train_examples,
        ),
        "conv": dict(
            variants=keep(args.conv_variants),
            batch_size=100,
            epochs=args.conv_epochs,
            train_examples=args.conv_train_examples,
        ),
        "dcgan": dict(
            variants=keep(args.dcgan_variants),
            batch_size=args.dcgan_batch_size,
            epochs=args.dcgan_epochs,
            train_examples=args.dcgan_train_examples,
            image_size=args.dcgan_image_size,
            width=args.dcgan_width,
        ),
        "unet": dict(
            variants=keep(args.unet_variants),
            batch_size=args.unet_batch_size,
            epochs=args.unet_epochs,
            train_examples=args.unet_train_examples,
            width=args.unet_width,
        ),
    }
