"""The tables of a suite, read back from what its parts wrote, as one Markdown page.

Every row names the command that made it, the machine, the date and the part's wall time (all
attempts together); rows of parts that have not finished are left out and listed at the end.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from experiments.reproducing.runner import STATE
from experiments.reproducing.suites import DATASET_NAMES, Part
from vaejax import io

# pictures copied into --gallery: (part, file in its workdir, name in the gallery)
GALLERY = (
    ("vae1", "sample_{epochs}.png", "vae1_samples.png"),
    ("iwae2_k50", "sample_{epochs}.png", "iwae2_samples.png"),
    ("dcgan", "samples.png", "dcgan_samples.png"),
    ("wgan_gp", "samples.png", "wgan_gp_samples.png"),
    ("ddpm", "samples_ddpm.png", "ddpm_samples_ddpm.png"),
    ("ddpm", "samples_ddim.png", "ddpm_samples_ddim.png"),
    ("quality", "samples.png", "sources_side_by_side.png"),
)


JUDGED = ("fid", "inception_score", "classes_covered")


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def duration(seconds: float) -> str:
    """'41 s', '12.3 min' or '2.1 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _provenance(*records: dict) -> str:
    """The records' wall time together (every attempt) and the last one's date."""
    seconds = sum(sum(r.get("seconds", [])) for r in records)
    return f"{duration(seconds)}, {records[-1].get('finished', '?')}"


def learning_curve(workdir: Path) -> str:
    """How the run's test loss moved over its last fifth of epochs ('97.01 -> 96.43 over
    epochs 80-100'): what more training would still buy."""
    lines = [line for line in io.read_jsonl(workdir / "metrics.jsonl") if "test_loss" in line]
    if len(lines) < 3:
        return ""
    last = lines[-1]
    first = lines[max(0, len(lines) - 1 - max(1, last["epoch"] // 5))]
    return (
        f"{first['test_loss']:.2f} -> {last['test_loss']:.2f} over epochs "
        f"{first['epoch']}-{last['epoch']}"
    )


def _likelihood_rows(parts: list[Part], root: Path, state: dict) -> list[str]:
    rows = [
        "| model | epochs | test NLL (nats) | ELBO | K, test images | target | met | "
        "training's test loss, last fifth | wall time (training + evaluation), date | command |",
        "|---|---:|---:|---:|---|---|---|---|---|---|",
    ]
    for part in parts:
        record = state["parts"].get(part.name, {})
        if part.table != "likelihood" or not record.get("done"):
            continue
        workdir = root / part.evaluates
        config = _json(workdir / "config.json") or {}
        found = sorted(workdir.glob("likelihood_*.json"))
        result = _json(found[-1]) if found else None
        if result is None:
            continue
        nll, error = result["test_nll"], result["test_nll_standard_error"]
        target = float(part.target.split()[-1]) if part.target else None
        met = "" if target is None else ("yes" if nll <= target else f"no (+{nll - target:.2f})")
        rows.append(
            f"| {part.label} | {config.get('epochs', '?')} | {nll:.2f} ± {error:.2f} | "
            f"{result['test_negative_elbo']:.2f} | {result['samples']}, "
            f"{result['test_examples']:,} | {part.target} | {met} | {learning_curve(workdir)} | "
            f"{_provenance(state['parts'].get(part.evaluates, {}), record)} | "
            f"`{record['command']}` |"
        )
    return rows


def quality_target(
    part: Part, row: dict, dcgan_fid: float | None = None, dataset: str = "mnist"
) -> tuple[str, bool | None]:
    """The target of a sample-quality row in words, and whether it is met (None: no number;
    the WGAN-GP's is the DCGAN's FID scored beside it, ``dcgan_fid``). The FID targets are
    MNIST's on every dataset; the DDPM's IS >= 9.0 only on MNIST (set by its real images'
    9.84; Fashion-MNIST's own score 7.77 on their judge)."""
    name, fid, inception = row["name"], row["fid"], row["inception_score"]
    if "/ddpm" in name and part.name.endswith("_best"):
        if dataset != "mnist":
            return "FID <= 15", fid <= 15
        return "FID <= 15, IS >= 9.0", fid <= 15 and inception >= 9.0
    if "/ddpm" in name:
        return "FID <= 25 (DDIM <= 100 steps)", fid <= 25
    if "/dcgan" in name:
        return "FID <= 40", fid <= 40
    if "/wgan_gp" in name:
        return "no worse than the DCGAN", None if dcgan_fid is None else fid <= dcgan_fid
    return ("the floor", None) if name.startswith("real") else ("", None)


def _quality_rows(parts: list[Part], root: Path, state: dict, dataset: str) -> list[str]:
    rows = [
        "| images | FID analogue | IS analogue | classes | target | met | scored by | "
        "wall time, date |",
        "|---|---:|---:|---:|---|---|---|---|",
    ]
    for part in parts:
        record = state["parts"].get(part.name, {})
        result = _json(root / part.name / "sample_quality.json")
        if part.table != "quality" or not record.get("done") or result is None:
            continue
        dcgan = [row["fid"] for row in result["rows"] if "/dcgan" in row["name"]]
        for row in result["rows"]:
            target, reached = quality_target(part, row, dcgan[0] if dcgan else None, dataset)
            met = "" if reached is None else ("yes" if reached else "no")
            rows.append(
                f"| {row['name']} ({row.get('images', '?')} images) | {row['fid']:.2f} | "
                f"{row['inception_score']:.2f} | {row.get('classes_covered', '')} | {target} | "
                f"{met} | `{part.name}` | {_provenance(record)} |"
            )
    return rows


def _benchmark_rows(root: Path, state: dict) -> list[str]:
    result = _json(root / "benchmark" / "benchmark.json")
    if result is None or not state["parts"].get("benchmark", {}).get("done"):
        return []
    rows = ["| model | variant | images/s | ratio | baseline |", "|---|---|---:|---:|---|"]
    for model, variants in result["models"].items():
        baseline = result["ratio_baseline"].get(model, "")
        for v in variants:
            ratio = f"{v['ratio']:.2f}x" if v.get("ratio") else ""
            rows.append(
                f"| {model} | {v['variant']} | {v['images_per_second']:,.0f} | {ratio} | "
                f"{baseline} |"
            )
    return rows


def _training_rows(parts: list[Part], root: Path, state: dict) -> list[str]:
    rows = [
        "| part | what | epochs | last epoch's record | wall time, date | command |",
        "|---|---|---:|---|---|---|",
    ]
    for part in parts:
        record = state["parts"].get(part.name, {})
        if part.table != "training" or not record.get("done"):
            continue
        lines = io.read_jsonl(root / part.name / "metrics.jsonl")
        last = lines[-1] if lines else {}
        numbers = {k: v for k, v in last.items() if isinstance(v, (int, float))}
        chosen = [k for k in numbers if k.startswith("test_") or k in JUDGED] or [
            k for k in numbers if k.startswith("train_")
        ]
        shown = ", ".join(f"{k} {numbers[k]:.4g}" for k in chosen)
        rows.append(
            f"| `{part.name}` | {part.label} | {last.get('epoch', '?')} | {shown} | "
            f"{_provenance(record)} | `{record['command']}` |"
        )
    return rows


def _section(title: str, intro: str, rows: list[str]) -> list[str]:
    if len(rows) <= 2:
        return [f"## {title}", "", "Not yet run in this suite.", ""]
    return [f"## {title}", "", intro, "", *rows, ""]


def page(suite: str, parts: list[Part], root: Path, invocation: str, dataset: str = "mnist") -> str:
    """The Markdown page of ``suite``'s finished parts in ``root`` (``suite``: its label, e.g.
    'cpu, Fashion-MNIST')."""
    state = json.loads((root / STATE).read_text())
    done = [state["parts"].get(p.name, {}) for p in parts]
    machines = sorted({r["machine"] for r in done if r.get("done") and r.get("machine")})
    commits = sorted({r["commit"] for r in done if r.get("done") and r.get("commit")})
    lines = [
        f"# Reproduced results: the {suite} suite",
        "",
        f"Parts run by `{state.get('command', invocation)}`; this page written by "
        f"`{invocation}` from the parts' own outputs. Machine: "
        f"{'; '.join(machines) or 'none yet'}. vaejax commit {', '.join(commits) or '?'}. "
        "Each row names its command, its wall time (every attempt together) and the date it "
        "finished; rerunning the suite's command continues it and rewrites this page.",
        "",
    ]
    jobs = max((r.get("jobs", 1) for r in done if r.get("done")), default=1)
    if jobs > 1:
        lines[-2] += (
            f" Up to {jobs} parts ran at once on the same machine (`--jobs {jobs}`; the judge "
            "and the benchmark alone), so the wall times of parts that overlapped include "
            "sharing it."
        )
    targets = "Burda et al. 2016, Table 1" if dataset == "mnist" else "none published"
    lines += _section(
        f"Likelihood: {DATASET_NAMES[dataset]}, dynamic binarization",
        "Test NLL = -L_K (the importance-weighted bound), mean ± standard error over the test "
        f"images; targets: {targets}.",
        _likelihood_rows(parts, root, state),
    )
    lines += _section(
        "Sample quality on the project's judge",
        "FID and Inception-score analogues of the LeNet judge (features of the training set; "
        "the real test images are the floor), scored by `experiments.sample_quality`."
        + (
            ""
            if dataset == "mnist"
            else " The FID targets are MNIST's, set on MNIST's judge: here they are a reference "
            "only; the DDPM's IS >= 9.0 is left out (this dataset's real images score lower)."
        ),
        _quality_rows(parts, root, state, dataset),
    )
    lines += _section(
        "Trainings", "The last epoch's record of each run.", _training_rows(parts, root, state)
    )
    if any(p.name == "benchmark" for p in parts):  # the Fashion-MNIST suites have none
        lines += _section(
            "Benchmark: vaejax against PyTorch",
            f"`{state['parts'].get('benchmark', {}).get('command', '')}`; ratios to the baseline "
            "row of each model.",
            _benchmark_rows(root, state),
        )
    missing = [p.name for p, r in zip(parts, done) if not r.get("done")]
    if missing:
        lines += ["## Not finished", "", ", ".join(f"`{name}`" for name in missing), ""]
    return "\n".join(lines)


def copy_gallery(root: Path, gallery: Path, state: dict) -> list[Path]:
    """Copies the pictures of :data:`GALLERY` of finished parts into ``gallery``."""
    gallery.mkdir(parents=True, exist_ok=True)
    copied = []
    for part, name, target in GALLERY:
        if not state["parts"].get(part, {}).get("done"):
            continue
        config = _json(root / part / "config.json") or {}
        source = root / part / name.format(epochs=config.get("epochs", 0))
        if source.is_file():
            copied.append(Path(shutil.copyfile(source, gallery / target)))
    return copied
