"""Benchmark the pytorch/examples VAE: PyTorch (as the example runs it, and tuned) against vaejax
(jit step in a Python loop, whole-epoch compiled loop), same data, same machine, one run.

Every measurement runs in a fresh subprocess (its own peak memory, its own device count). Prints
three tables (variants at batch 128; vaejax over batch sizes; vaejax over device counts) with
ratios to the PyTorch example, achieved GFLOP/s and the fraction of the matrix-multiply peak
measured in the same run, and writes them as JSON to --out. Needs torch for the PyTorch rows
(pip install -e '.[bench]'); without it they are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vaejax import benchmark

REPO_ROOT = Path(__file__).resolve().parents[1]
ALL_VARIANTS = benchmark.VARIANTS + ("torch_compiled",)


def _child(spec: dict) -> dict:
    """Runs one measurement in this process: ``spec['kind']`` is 'matmul' or 'train'."""
    if spec["kind"] == "matmul":
        return {"matmul_flops": benchmark.matmul_peak_flops()}
    from vaejax import data

    kwargs = dict(data_dir=spec["data_dir"] or None, raw_data_dir=spec["raw_data_dir"] or None)
    train = data.load_split("mnist", "train", **kwargs).images
    test = data.load_split("mnist", "test", **kwargs).images
    variant = spec["variant"]
    compiled = variant == "torch_compiled"
    result = benchmark.run_variant("torch_tuned" if compiled else variant, train, test,
                                   batch_size=spec["batch_size"], epochs=spec["epochs"],
                                   compile_model=compiled)
    return {**result, "variant": variant, "batch_size": spec["batch_size"]}


def _measure(spec: dict, devices: int | None = None, timeout: float = 1800) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    proc = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--child",
                           json.dumps(spec)], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {**spec, "error": reason}
    return json.loads(lines[-1])


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))
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
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _variants(text: str) -> list[str]:
    names = [v for v in text.split(",") if v]
    unknown = [v for v in names if v not in ALL_VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {unknown}: choose from "
                                         f"{', '.join(ALL_VARIANTS)}")
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw_data_dir", default="", help="folder with the raw MNIST .gz files")
    parser.add_argument("--data_dir", default="", help="tfds data directory")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs per variant; the first is the warm-up (default: 4)")
    parser.add_argument("--batch_size", type=int, default=128, help="(default: 128)")
    parser.add_argument("--variants", type=_variants, default=list(ALL_VARIANTS),
                        help=f"comma-separated, from {','.join(ALL_VARIANTS)} (default: all)")
    parser.add_argument("--batch_sizes", type=_ints, default=[128, 256, 512, 1024, 2048, 4096],
                        help="jax_epoch batch-size sweep (default: 128,...,4096)")
    parser.add_argument("--devices", type=_ints, default=[1, 8],
                        help="jax_epoch device counts (CPU: fake devices; default: 1,8)")
    parser.add_argument("--sweep_epochs", type=int, default=2,
                        help="epochs per sweep point, the first the warm-up (default: 2)")
    parser.add_argument("--out", default="benchmark.json", help="JSON results (default: %(default)s)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))), flush=True)
        return 0
    if args.epochs < 2 or args.sweep_epochs < 2:
        parser.error("--epochs and --sweep_epochs must be at least 2 (one warm-up, one timed)")

    common = {"kind": "train", "data_dir": args.data_dir, "raw_data_dir": args.raw_data_dir}
    variants = [v for v in args.variants if v.startswith("jax") or _torch_available()]
    if len(variants) < len(args.variants):
        print("torch is not installed: PyTorch variants left out (pip install -e '.[bench]')")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    peak = _measure({"kind": "matmul"}).get("matmul_flops", float("nan"))
    flops = benchmark.mlp_vae_train_flops()
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s (float32 2048^3, jitted); MLP VAE train step "
          f"{flops / 1e6:.2f} MFLOP/image", flush=True)

    results = {"date": started, "matmul_flops": peak, "train_flops_per_image": flops,
               "argv": sys.argv[1:], "variants": [], "batch_sweep": [], "device_sweep": []}

    def describe(r: dict) -> list[str]:
        if "error" in r:
            return [r.get("variant", "?"), "error: " + r["error"][:60]] + [""] * 6
        rate = r["images_per_second"]
        base = next((x["images_per_second"] for x in results["variants"]
                     if x.get("variant") == "torch_example" and "error" not in x), None)
        return [r["variant"], f"{rate:,.0f}", f"{rate / base:.2f}x" if base else "-",
                f"{r['first_epoch_seconds']:.2f}", f"{r['test_negative_elbo']:.2f}",
                f"{rate * flops / 1e9:.1f}", f"{100 * rate * flops / peak:.0f}%",
                f"{r['peak_host_mib']:,.0f}"]

    for variant in variants:
        print(f"measuring {variant} ...", flush=True)
        results["variants"].append(_measure({**common, "variant": variant,
                                             "batch_size": args.batch_size,
                                             "epochs": args.epochs}))
    for batch_size in args.batch_sizes:
        print(f"measuring jax_epoch at batch {batch_size} ...", flush=True)
        results["batch_sweep"].append(_measure({**common, "variant": "jax_epoch",
                                                "batch_size": batch_size,
                                                "epochs": args.sweep_epochs}))
    for devices in args.devices:
        print(f"measuring jax_epoch on {devices} device(s) ...", flush=True)
        r = _measure({**common, "variant": "jax_epoch", "batch_size": args.batch_size,
                      "epochs": args.sweep_epochs}, devices=devices)
        results["device_sweep"].append({**r, "requested_devices": devices})

    header = ["variant", "img/s", "vs example", "1st epoch s", "test -ELBO", "GFLOP/s",
              "of peak", "peak MiB"]
    print(f"\nMLP VAE, batch {args.batch_size}, {args.epochs} epochs (img/s: median of the "
          f"last {args.epochs - 1})")
    print(_table(header, [describe(r) for r in results["variants"]]))
    print("\njax_epoch over batch sizes")
    print(_table(["batch"] + header[1:2] + header[3:],
                 [describe({**r, "variant": str(r.get("batch_size"))})[:2] + describe(r)[3:]
                  for r in results["batch_sweep"]]))
    print("\njax_epoch over device counts (batch {})".format(args.batch_size))
    print(_table(["devices", "img/s", "platform"],
                 [[str(r.get("devices", r["requested_devices"])),
                   f"{r['images_per_second']:,.0f}" if "error" not in r else r["error"][:60],
                   r.get("platform", "")] for r in results["device_sweep"]]))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
