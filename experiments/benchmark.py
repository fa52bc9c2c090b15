"""Benchmark vaejax against PyTorch: the pytorch/examples MLP VAE (PyTorch as the example runs
it, tuned, and compiled; vaejax's jit step in a Python loop and whole-epoch compiled loop) and
Foster's conv VAE (on a subset: it is slow on a CPU), same data, same machine, one run; with
--models ...,dcgan also the pytorch/examples DCGAN (on a subset).

Every measurement runs in a fresh subprocess (its own peak memory, its own device count). Prints
tables (each model's variants; the MLP over batch sizes and device counts) with ratios to the
first row (the PyTorch example for the MLP, tuned PyTorch for the conv model and the DCGAN),
achieved GFLOP/s and the fraction of the matrix-multiply peak measured in the same run, and
writes them as JSON to --out (each row's ratio as ``ratio``, its baseline in ``ratio_baseline``).
Needs torch for the PyTorch rows (pip install -e '.[bench]'); without it they are left out.

The DCGAN (--models dcgan; not in the default set) trains vaejax.models.dcgan and its PyTorch twin
(Adam 2e-4, betas 0.5 / 0.999, one discriminator and one generator step per real batch, MNIST in
[-1, 1]) on the first --dcgan_train_examples images (default 6400: about 20 s an epoch per
variant at width 64 on 2 CPU cores) for --dcgan_epochs (default 3), batch --dcgan_batch_size
(default 64), width --dcgan_width (ngf = ndf, default 64), --dcgan_image_size 28 (default) or 32
(zero-padded), variants --dcgan_variants (default torch_tuned,jax_step,jax_epoch; torch_compiled
puts the PyTorch update through torch.compile). Its table reports real images/second, the first
epoch's seconds and the last epoch's mean losses, in place of the VAEs' test loss. Example:

    python -m experiments.benchmark --raw_data_dir ../shared/data/mnist --models dcgan
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments.benchmarking.common import MODELS, VARIANTS
from experiments.benchmarking.flops import matmul_peak_flops, train_flops
from experiments.benchmarking.measure import run_variant
from vaejax import data

REPO_ROOT = Path(__file__).resolve().parents[1]
ALL_VARIANTS = VARIANTS + ("torch_compiled",)


def _child(spec: dict) -> dict:
    """Runs one measurement in this process: ``spec['kind']`` is 'matmul' or 'train'."""
    if spec["kind"] == "matmul":
        return {"matmul_flops": matmul_peak_flops()}

    kwargs = dict(data_dir=spec["data_dir"] or None, raw_data_dir=spec["raw_data_dir"] or None)
    train = data.load_split("mnist", "train", **kwargs).images
    test = data.load_split("mnist", "test", **kwargs).images
    model = spec.get("model", "mlp")
    if spec.get("train_examples"):
        train = train[: spec["train_examples"]]
    variant = spec["variant"]
    compiled = variant == "torch_compiled"
    gan_options = (
        {"image_size": spec["image_size"], "width": spec["width"]} if model == "dcgan" else {}
    )
    result = run_variant(
        "torch_tuned" if compiled else variant,
        train,
        test,
        batch_size=spec["batch_size"],
        epochs=spec["epochs"],
        compile_model=compiled,
        model=model,
        **gan_options,
    )
    return {
        **result,
        "variant": variant,
        "batch_size": spec["batch_size"],
        "train_examples": len(train),
    }


def _measure(spec: dict, devices: int | None = None, timeout: float = 1800) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", "--child", json.dumps(spec)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {**spec, "error": reason}
    return json.loads(lines[-1])


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]

    def line(cells):
        return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


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


def _variants(text: str) -> list[str]:
    names = [v for v in text.split(",") if v]
    unknown = [v for v in names if v not in ALL_VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown variant(s) {unknown}: choose from {', '.join(ALL_VARIANTS)}"
        )
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--raw_data_dir", default="", help="folder with the raw MNIST .gz files")
    parser.add_argument("--data_dir", default="", help="tfds data directory")
    parser.add_argument(
        "--epochs",
        type=int,
        default=4,
        help="epochs per variant; the first is the warm-up (default: 4)",
    )
    parser.add_argument("--batch_size", type=int, default=128, help="(default: 128)")
    parser.add_argument(
        "--variants",
        type=_variants,
        default=list(ALL_VARIANTS),
        help=f"comma-separated, from {','.join(ALL_VARIANTS)} (default: all)",
    )
    parser.add_argument(
        "--batch_sizes",
        type=_ints,
        default=[128, 256, 512, 1024, 2048, 4096],
        help="jax_epoch batch-size sweep (default: 128,...,4096)",
    )
    parser.add_argument(
        "--devices",
        type=_ints,
        default=[1, 8],
        help="jax_epoch device counts (CPU: fake devices; default: 1,8)",
    )
    parser.add_argument(
        "--models",
        default="mlp,conv",
        help="comma-separated, from mlp,conv,dcgan (default: mlp,conv)",
    )
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
    _add_dcgan_arguments(parser)
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


def _add_dcgan_arguments(parser: argparse.ArgumentParser) -> None:
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


def _checked_models(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The models to measure, once every flag is checked (a bad one exits through
    ``parser.error``)."""
    if min(args.epochs, args.sweep_epochs, args.conv_epochs, args.dcgan_epochs) < 2:
        parser.error(
            "--epochs, --sweep_epochs, --conv_epochs and --dcgan_epochs must be at "
            "least 2 (one warm-up, one timed)"
        )
    models = [m for m in args.models.split(",") if m]
    if not models or set(models) - set(MODELS):
        parser.error(f"--models must name some of {', '.join(MODELS)}, got {args.models!r}")
    for flag, model in (("--conv_variants", "conv"), ("--dcgan_variants", "dcgan")):
        if "torch_example" in getattr(args, flag[2:]):
            parser.error(
                f"{flag}: torch_example is the pytorch/examples MLP; the {model} "
                "model's PyTorch baseline is torch_tuned"
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
    return models


def _model_runs(args: argparse.Namespace, torch_ok: bool) -> dict[str, dict]:
    """Each model's variants (the PyTorch ones only with torch) and training settings."""

    def keep(names):
        return [v for v in names if v.startswith("jax") or torch_ok]

    return {
        "mlp": dict(
            variants=keep(args.variants),
            batch_size=args.batch_size,
            epochs=args.epochs,
            train_examples=0,
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
    }


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))), flush=True)
        return 0
    models = _checked_models(parser, args)
    common = {"kind": "train", "data_dir": args.data_dir, "raw_data_dir": args.raw_data_dir}
    torch_ok = _torch_available()
    if not torch_ok:
        print("torch is not installed: PyTorch variants left out (pip install -e '.[bench]')")
    runs = _model_runs(args, torch_ok)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    peak = _measure({"kind": "matmul"}).get("matmul_flops", float("nan"))
    flops = {
        m: train_flops(m, image_size=args.dcgan_image_size, width=args.dcgan_width) for m in MODELS
    }
    gan_flops = f", DCGAN {flops['dcgan'] / 1e6:.2f}" if "dcgan" in models else ""
    print(
        f"matmul peak {peak / 1e9:.1f} GFLOP/s (float32 2048^3, jitted); train step "
        f"MLP {flops['mlp'] / 1e6:.2f}, conv {flops['conv'] / 1e6:.2f}{gan_flops} MFLOP/image",
        flush=True,
    )
    results = {
        "date": started,
        "matmul_flops": peak,
        "train_flops_per_image": flops,
        "argv": sys.argv[1:],
        "models": {},
        "ratio_baseline": {},
        "batch_sweep": [],
        "device_sweep": [],
    }
    for model in models:
        _measure_model(model, runs[model], common, results)
    if "mlp" in models:
        _measure_sweeps(args, common, results)
    table = _Tables(flops, peak)
    table.print_models([m for m in models if m != "dcgan"], runs, results)
    table.print_dcgan(runs["dcgan"], results)
    table.print_sweeps(args.batch_size, results)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults in {args.out}")
    return 0


def _measure_model(model: str, run: dict, common: dict, results: dict) -> None:
    """Measures each variant of ``model`` into ``results['models'][model]``, each row with its
    ratio to the baseline row (:func:`_baseline`)."""
    rows = results["models"][model] = []
    keys = ("batch_size", "epochs", "train_examples") + (
        ("image_size", "width") if model == "dcgan" else ()
    )
    for variant in run["variants"]:
        print(f"measuring {model} {variant} ...", flush=True)
        rows.append(
            _measure({**common, "model": model, "variant": variant, **{k: run[k] for k in keys}})
        )
    base = _baseline(model, rows)
    if base is not None:
        results["ratio_baseline"][model] = base["variant"]
        for r in rows:
            if "error" not in r:
                r["ratio"] = r["images_per_second"] / base["images_per_second"]


def _baseline(model: str, rows: list[dict]) -> dict | None:
    """The row the ratios divide by: tuned PyTorch for the dcgan where measured, else the first
    row (as the VAE tables do)."""
    ok = [r for r in rows if "error" not in r]
    if model == "dcgan":
        return next((r for r in ok if r["variant"] == "torch_tuned"), ok[0] if ok else None)
    return rows[0] if rows and "error" not in rows[0] else None


def _measure_sweeps(args: argparse.Namespace, common: dict, results: dict) -> None:
    """The MLP's jax_epoch over ``--batch_sizes`` and over ``--devices``."""
    for batch_size in args.batch_sizes:
        print(f"measuring mlp jax_epoch at batch {batch_size} ...", flush=True)
        results["batch_sweep"].append(
            _measure(
                {
                    **common,
                    "variant": "jax_epoch",
                    "batch_size": batch_size,
                    "epochs": args.sweep_epochs,
                }
            )
        )
    for devices in args.devices:
        print(f"measuring mlp jax_epoch on {devices} device(s) ...", flush=True)
        r = _measure(
            {
                **common,
                "variant": "jax_epoch",
                "batch_size": args.batch_size,
                "epochs": args.sweep_epochs,
            },
            devices=devices,
        )
        results["device_sweep"].append({**r, "requested_devices": devices})


class _Tables:
    """The printed tables; rates become GFLOP/s and fractions of the matmul ``peak`` through
    each model's ``flops`` per image."""

    HEADER = [
        "variant",
        "img/s",
        "vs first",
        "1st epoch s",
        "test -ELBO",
        "GFLOP/s",
        "of peak",
        "peak MiB",
    ]

    def __init__(self, flops: dict[str, int], peak: float):
        self.flops, self.peak = flops, peak

    def describe(self, r: dict, base: float | None, model: str = "mlp") -> list[str]:
        if "error" in r:
            return [r.get("variant", "?"), "error: " + r["error"][:60]] + [""] * 6
        rate = r["images_per_second"]
        return [
            r["variant"],
            f"{rate:,.0f}",
            f"{rate / base:.2f}x" if base else "-",
            f"{r['first_epoch_seconds']:.2f}",
            f"{r['test_negative_elbo']:.2f}",
            f"{rate * self.flops[model] / 1e9:.1f}",
            f"{100 * rate * self.flops[model] / self.peak:.0f}%",
            f"{r['peak_host_mib']:,.0f}",
        ]

    def describe_gan(self, r: dict, base: float | None) -> list[str]:
        if "error" in r:
            return [r.get("variant", "?"), "error: " + r["error"][:60]] + [""] * 9
        rate = r["images_per_second"]
        return [
            r["variant"],
            f"{rate:,.0f}",
            f"{rate / base:.2f}x" if base else "-",
            f"{r['first_epoch_seconds']:.2f}",
            f"{r['d_loss']:.3f}",
            f"{r['g_loss']:.3f}",
            f"{r['d_real']:.2f} / {r['d_fake']:.2f}",
            f"{rate * self.flops['dcgan'] / 1e9:.1f}",
            f"{100 * rate * self.flops['dcgan'] / self.peak:.0f}%",
            f"{r['peak_host_mib']:,.0f}",
        ]

    def print_models(self, models: list[str], runs: dict[str, dict], results: dict) -> None:
        """One table per VAE: its variants, ratios to the first row."""
        for model in models:
            rows, run = results["models"][model], runs[model]
            if not rows:
                continue
            base = rows[0].get("images_per_second")
            images = f"{run['train_examples']:,} images, " if run["train_examples"] else ""
            print(
                f"\n{model} VAE, batch {run['batch_size']}, {images}{run['epochs']} epochs "
                f"(img/s: median of the last {run['epochs'] - 1})"
            )
            print(_table(self.HEADER, [self.describe(r, base, model) for r in rows]))

    def print_dcgan(self, run: dict, results: dict) -> None:
        """The DCGAN's table, if measured: ratios to its baseline, the last epoch's losses."""
        if not results["models"].get("dcgan"):
            return
        rows = results["models"]["dcgan"]
        name = results["ratio_baseline"].get("dcgan")
        base = next((r["images_per_second"] for r in rows if r.get("variant") == name), None)
        size = run["image_size"]
        print(
            f"\ndcgan, batch {run['batch_size']}, width {run['width']}, {size}x{size}, "
            f"{run['train_examples']:,} images, {run['epochs']} epochs (img/s: real images, "
            f"median of the last {run['epochs'] - 1}; losses: means over the last epoch)"
        )
        print(
            _table(
                [
                    "variant",
                    "img/s",
                    f"vs {name or 'first'}",
                    "1st epoch s",
                    "D loss",
                    "G loss",
                    "D(x) / D(G(z))",
                    "GFLOP/s",
                    "of peak",
                    "peak MiB",
                ],
                [self.describe_gan(r, base) for r in rows],
            )
        )

    def print_sweeps(self, batch_size: int, results: dict) -> None:
        """The MLP's jax_epoch over batch sizes and over device counts, if measured."""
        header = self.HEADER
        if results["batch_sweep"]:
            print("\nmlp jax_epoch over batch sizes")
            print(
                _table(
                    ["batch"] + header[1:2] + header[3:],
                    [
                        self.describe({**r, "variant": str(r.get("batch_size"))}, None)[:2]
                        + self.describe(r, None)[3:]
                        for r in results["batch_sweep"]
                    ],
                )
            )
        if results["device_sweep"]:
            print(f"\nmlp jax_epoch over device counts (batch {batch_size})")
            print(
                _table(
                    ["devices", "img/s", "platform"],
                    [
                        [
                            str(r.get("devices", r["requested_devices"])),
                            f"{r['images_per_second']:,.0f}"
                            if "error" not in r
                            else r["error"][:60],
                            r.get("platform", ""),
                        ]
                        for r in results["device_sweep"]
                    ],
                )
            )


if __name__ == "__main__":
    raise SystemExit(main())
