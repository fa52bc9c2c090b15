"""Reproduce the published numbers: run the trainings, evaluations and the benchmark behind the
results tables, then write the tables (and copy the gallery's pictures) from their outputs.

    python -m experiments.reproduce --suite smoke    # minutes: every part, tiny (CI runs it)
    python -m experiments.reproduce --suite cpu      # hours on 2 CPU cores
    python -m experiments.reproduce --suite gpu --jobs 6 --stop_after 540   # one GPU, ~10 min

Parts, in order: the judge (classifier); Burda et al.'s one-layer VAE, one-layer IWAE k = 5 and
two-layer IWAE k = 50 under their learning-rate schedule, each with its test NLL (K = 5000 in
the cpu and gpu suites); DCGAN, WGAN-GP and DDPM; the sample-quality scores (DDIM 50 steps, and
the DDPM's best sampler); the benchmark against PyTorch. --dataset fashion_mnist runs the
judge, the one-layer VAE, the GANs, the DDPM and their scores on Fashion-MNIST. Each part is one
command of the project, run in its own process, its output in <workdir>/logs/. The suite is
resumable: a finished part is not run again, a stopped one resumes from its checkpoint, so
rerunning the same command after a kill, a signal or --stop_after continues where it stopped.
--jobs N runs up to N parts at once (on a GPU, small models leave most of it idle); the judge
and the benchmark run alone. --list prints the commands without running them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from experiments.reproducing import report, runner, suites


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.reproduce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--suite", choices=suites.SUITES, default="smoke", help="(default: smoke)")
    parser.add_argument(
        "--dataset",
        choices=suites.DATASETS,
        default="mnist",
        help="(default: mnist) fashion_mnist: the judge, the one-layer VAE, the GANs and the "
        "DDPM on Fashion-MNIST, no benchmark",
    )
    parser.add_argument(
        "--workdir",
        default="",
        help="(default: workdirs/reproduce_<suite>, workdirs/reproduce_<suite>_<dataset> for "
        "another dataset than mnist)",
    )
    parser.add_argument("--data_dir", default="", help="tfds data directory of every part")
    parser.add_argument(
        "--raw_data_dir", default="", help="folder with the dataset's raw .gz files"
    )
    parser.add_argument(
        "--tables", default="", help="the results page to write (default: <workdir>/results.md)"
    )
    parser.add_argument("--gallery", default="", help="copy the parts' pictures into this folder")
    parser.add_argument(
        "--stop_after",
        type=float,
        default=None,
        help="stop (the running part saves) after this many seconds; exit 75; rerun to continue",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="run up to this many parts at once, each when the parts it uses are done; the judge "
        "and the benchmark run alone (default: 1)",
    )
    parser.add_argument("--list", action="store_true", help="print the commands and exit")
    parser.add_argument(
        "--report", action="store_true", help="write the page of the finished parts; run nothing"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.stop_after is not None and not args.stop_after > 0:
        print(f"error: --stop_after must be positive, got {args.stop_after}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    other = "" if args.dataset == "mnist" else f"_{args.dataset}"
    root = Path(args.workdir or f"workdirs/reproduce_{args.suite}{other}")
    data = ("--data_dir", args.data_dir) if args.data_dir else ()
    data += ("--raw_data_dir", args.raw_data_dir) if args.raw_data_dir else ()
    parts = suites.parts(args.suite, data, args.dataset)
    name = suites.label(args.suite, args.dataset)  # in the state file and on the page
    if args.list:
        for part in parts:
            print(f"{part.name}: {shlex.join(runner.command_of(part, root))}")
        return 0
    try:
        given = sys.argv[1:] if argv is None else argv
        invocation = shlex.join(["python", "-m", "experiments.reproduce", *given])
        status = 0
        if not args.report:
            status = runner.run_suite(
                name,
                parts,
                root,
                stop_after=args.stop_after,
                command=invocation,
                jobs=args.jobs,
            )
        tables = Path(args.tables or root / "results.md")
        tables.parent.mkdir(parents=True, exist_ok=True)
        tables.write_text(report.page(name, parts, root, invocation, args.dataset))
        print(f"reproduce: wrote {tables}")
        if args.gallery:
            state = runner.load_state(root, name)
            copied = report.copy_gallery(root, Path(args.gallery), state)
            print(f"reproduce: copied {len(copied)} pictures into {args.gallery}")
    except (runner.SuiteError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
