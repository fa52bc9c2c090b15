"""How fast the input pipeline delivers images, against how fast the conv models consume them.

Rows, each in images/second on this machine, all on the first --train_examples images of
--dataset at batch --batch_size:

- the streamed reader alone (vaejax.training.stream: host threads gather the rows of each step
  of the training order and place each block of batches on the devices), from the split in
  memory (what a streamed run reads; a split larger than memory is read the same way from its
  memory-mapped decoded copy) and from the prepared tfds records, each image decoded by PIL on
  the reader's threads (a reader without the decoded copy);
- training Foster's conv VAE with the data on the device and streamed, and the DCGAN with the
  data on the device (images/second of the last epoch, from timing.jsonl).

The last column divides each row by the fastest training row: the reader must stay several times
ahead of the fastest model. Writes the table as JSON to --out. Example:

    python -m experiments.data_throughput --raw_data_dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from vaejax import data, io, sharding
from vaejax.data.records import RecordSource
from vaejax.runs.base import train_and_evaluate
from vaejax.runs.gan import GANConfig
from vaejax.runs.vae import VAEConfig
from vaejax.training import stream


def reader_rate(source, batch_size: int, steps: int) -> float:
    """Images/second of the streamed reader over ``steps`` steps of epoch 0 of ``source``,
    blocks placed on the devices (the first block, which starts the threads, is not timed)."""
    mesh = sharding.data_mesh()
    update = lambda state, batch, key: (state, {"loss": jnp.zeros(())})
    runner = stream.make_streamed_runner(
        update, None, batch_size=batch_size, num_examples=stream.num_examples(source), mesh=mesh
    )
    reader = stream.Streamed(source, runner, jax.random.key(0), mesh)
    steps = min(steps, runner.steps_per_epoch)
    jax.block_until_ready(reader.block(0, 0, reader.chunk))
    start = time.perf_counter()
    done = reader.chunk
    while done < steps:
        stop = min(done + reader.chunk, steps)
        jax.block_until_ready(reader.block(0, done, stop))
        done = stop
    return (done - reader.chunk) * batch_size / (time.perf_counter() - start)


def training_rate(config, workdir: Path) -> float:
    train_and_evaluate(config, workdir)
    return io.read_jsonl(workdir / "timing.jsonl")[-1]["images_per_second"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data_dir", default="")
    parser.add_argument("--raw_data_dir", default="")
    parser.add_argument("--train_examples", type=int, default=12800)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="data_throughput.json")
    args = parser.parse_args(argv)
    kwargs = dict(data_dir=args.data_dir or None, raw_data_dir=args.raw_data_dir or None)
    train = data.take(data.load_split(args.dataset, "train", **kwargs), args.train_examples)
    prepared = Path(args.data_dir or data.default_data_dir())
    records = RecordSource(args.dataset, "train", prepared)
    steps = args.train_examples // args.batch_size
    rows = {
        "reader, split in memory": reader_rate(train.images, args.batch_size, steps),
        "reader, tfds records decoded by PIL": reader_rate(records, args.batch_size, steps),
    }
    shared = dict(
        dataset=args.dataset,
        data_dir=args.data_dir,
        raw_data_dir=args.raw_data_dir,
        train_examples=args.train_examples,
        test_examples=1000,
        batch_size=args.batch_size,
        epochs=args.epochs,
    )
    vae = VAEConfig(model="conv", latent_dim=2, **shared)
    gan = GANConfig(eval_samples=0, **shared)
    with tempfile.TemporaryDirectory() as scratch:
        for name, config in (
            ("train conv VAE, data on device", dataclasses.replace(vae, data_on_device="on")),
            ("train conv VAE, data streamed", dataclasses.replace(vae, data_on_device="off")),
            ("train DCGAN, data on device", dataclasses.replace(gan, data_on_device="on")),
        ):
            rows[name] = training_rate(config, Path(scratch) / name.replace(" ", "_"))
    fastest = max(v for k, v in rows.items() if k.startswith("train"))
    device = f"{jax.device_count()} {jax.devices()[0].platform} device(s)"
    print(f"\n{args.dataset}, batch {args.batch_size}, {device}")
    print(f"{'':<40} {'images/s':>10} {'x fastest model':>16}")
    for name, rate in rows.items():
        print(f"{name:<40} {rate:>10,.0f} {rate / fastest:>16.1f}")
    record = {"device": device, "batch_size": args.batch_size, "rows": rows}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
