"""Benchmark vaejax against PyTorch: the pytorch/examples MLP VAE (PyTorch as the example runs
it, tuned, and compiled; vaejax's jit step in a Python loop and whole-epoch compiled loop) and
Foster's conv VAE (on a subset: it is slow on a CPU), same data, same machine, one run; with
--models ...,dcgan also the pytorch/examples DCGAN (on a subset).

Every measurement runs in a fresh subprocess (its own peak memory, its own device count). A run
stopped by a signal keeps its finished measurements in ``<out>.partial``; rerunning the same
command on the same machine measures only the rest (experiments/benchmarking/journal.py). Prints
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

The DDPM U-Net (--models unet; not in the default set) trains experiments.ddpm_mnist's update
(U-Net of --unet_width channels, default 32; noise-prediction MSE, clipping, Adam with warmup,
EMA) and the same update on its PyTorch twin (experiments.benchmarking.torch_unet) on the first
--unet_train_examples images (default 1280) for --unet_epochs (default 3), batch
--unet_batch_size (default 128); variants --unet_variants. Its table reports the last epoch's
mean loss.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from experiments.benchmarking.command_line import build_parser, checked_models, model_runs
from experiments.benchmarking.common import MODELS
from experiments.benchmarking.flops import matmul_peak_flops, train_flops
from experiments.benchmarking.journal import Journal
from experiments.benchmarking.measure import run_variant
from experiments.benchmarking.tables import Tables
from vaejax import data

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    gan_options = {
        "dcgan": {"image_size": spec.get("image_size"), "width": spec.get("width")},
        "unet": {"width": spec.get("width")},
    }.get(model, {})
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


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None) -> int:
    parser = build_parser(__doc__)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))), flush=True)
        return 0
    models = checked_models(parser, args)
    torch_ok = _torch_available()
    if not torch_ok:
        print("torch is not installed: PyTorch variants left out (pip install -e '.[bench]')")
    runs = model_runs(args, torch_ok)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    journal = Journal(args.out, _measure)
    if journal.kept:
        print(f"continuing: {len(journal.kept)} measurements kept in {journal.path}", flush=True)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    try:
        return _benchmark(args, models, runs, journal, started)
    except _Stopped as stopped:
        print(
            f"benchmark: stopped by {stopped.args[0]}; {len(journal.kept)} measurements kept in "
            f"{journal.path}: rerun the same command to continue",
            file=sys.stderr,
        )
        return 128 + int(signal.Signals[stopped.args[0]])


class _Stopped(Exception):
    """SIGINT, SIGTERM or SIGHUP, raised in the main thread: subprocess.run kills the running
    measurement's child process on any exception, and the kept measurements stay."""


def _stop(signum, frame):
    raise _Stopped(signal.Signals(signum).name)


def _benchmark(args, models, runs, journal: Journal, started: str) -> int:
    """Measures everything (through ``journal``), prints the tables, writes ``--out``."""
    common = {"kind": "train", "data_dir": args.data_dir, "raw_data_dir": args.raw_data_dir}
    peak = journal.measure({"kind": "matmul"}).get("matmul_flops", float("nan"))
    flops = {
        m: train_flops(
            m,
            image_size=args.dcgan_image_size,
            width=args.unet_width if m == "unet" else args.dcgan_width,
        )
        for m in MODELS
    }
    gan_flops = f", DCGAN {flops['dcgan'] / 1e6:.2f}" if "dcgan" in models else ""
    gan_flops += f", U-Net {flops['unet'] / 1e6:.1f}" if "unet" in models else ""
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
        _measure_model(model, runs[model], common, results, journal.measure)
    if "mlp" in models:
        _measure_sweeps(args, common, results, journal.measure)
    table = Tables(flops, peak)
    table.print_models([m for m in models if m in ("mlp", "conv")], runs, results)
    table.print_dcgan(runs["dcgan"], results)
    table.print_unet(runs["unet"], results)
    table.print_sweeps(args.batch_size, results)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    journal.close()
    print(f"\nresults in {args.out}")
    return 0


def _measure_model(model: str, run: dict, common: dict, results: dict, measure) -> None:
    """Measures each variant of ``model`` into ``results['models'][model]``, each row with its
    ratio to the baseline row (:func:`_baseline`)."""
    rows = results["models"][model] = []
    keys = ("batch_size", "epochs", "train_examples") + {
        "dcgan": ("image_size", "width"),
        "unet": ("width",),
    }.get(model, ())
    for variant in run["variants"]:
        print(f"measuring {model} {variant} ...", flush=True)
        rows.append(
            measure({**common, "model": model, "variant": variant, **{k: run[k] for k in keys}})
        )
    base = _baseline(model, rows)
    if base is not None:
        results["ratio_baseline"][model] = base["variant"]
        for r in rows:
            if "error" not in r:
                r["ratio"] = r["images_per_second"] / base["images_per_second"]


def _baseline(model: str, rows: list[dict]) -> dict | None:
    """The row the ratios divide by: tuned PyTorch for the dcgan and the unet where measured,
    else the first row (as the VAE tables do)."""
    ok = [r for r in rows if "error" not in r]
    if model in ("dcgan", "unet"):
        return next((r for r in ok if r["variant"] == "torch_tuned"), ok[0] if ok else None)
    return rows[0] if rows and "error" not in rows[0] else None


def _measure_sweeps(args: argparse.Namespace, common: dict, results: dict, measure) -> None:
    """The MLP's jax_epoch over ``--batch_sizes`` and over ``--devices``."""
    for batch_size in args.batch_sizes:
        print(f"measuring mlp jax_epoch at batch {batch_size} ...", flush=True)
        results["batch_sweep"].append(
            measure(
                {
                    **common,
                    "variant": "jax_epoch",
                    "batch_size": batch_size,
                    "epochs": args.sweep_epochs,
                    "train_examples": args.train_examples,
                }
            )
        )
    for devices in args.devices:
        print(f"measuring mlp jax_epoch on {devices} device(s) ...", flush=True)
        r = measure(
            {
                **common,
                "variant": "jax_epoch",
                "batch_size": args.batch_size,
                "epochs": args.sweep_epochs,
                "train_examples": args.train_examples,
            },
            devices=devices,
        )
        results["device_sweep"].append({**r, "requested_devices": devices})


if __name__ == "__main__":
    raise SystemExit(main())
