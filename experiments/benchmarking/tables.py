"""The benchmark's printed tables: each model's variants with their ratios to the baseline row,
the DCGAN's losses, the DDPM U-Net's loss, and the MLP's sweeps over batch sizes and device
counts; rates shown as images/second, achieved GFLOP/s and the fraction of the measured
matrix-multiply peak."""

from __future__ import annotations


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]

    def line(cells):
        return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


class Tables:
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

    def print_unet(self, run: dict, results: dict) -> None:
        """The DDPM U-Net's table, if measured: ratios to its baseline, the last epoch's loss."""
        rows = results["models"].get("unet")
        if not rows:
            return
        name = results["ratio_baseline"].get("unet")
        base = next((r["images_per_second"] for r in rows if r.get("variant") == name), None)
        print(
            f"\nunet DDPM step, width {run['width']}, batch {run['batch_size']}, 28x28, "
            f"{run['train_examples']:,} images, {run['epochs']} epochs (img/s: median of the last "
            f"{run['epochs'] - 1}; loss: noise MSE, mean over the last epoch)"
        )
        header = ["variant", "img/s", f"vs {name or 'first'}", "1st epoch s", "loss"]
        header += ["GFLOP/s", "of peak", "peak MiB"]
        described = []
        for r in rows:
            line = self.describe(
                {**r, "test_negative_elbo": r.get("loss", float("nan"))}, base, "unet"
            )
            described.append(line[:4] + [f"{r['loss']:.4f}" if "loss" in r else ""] + line[5:])
        print(_table(header, described))

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
