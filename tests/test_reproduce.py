"""``experiments.reproduce``: the smoke suite end to end (stopped, then continued), the tables it
writes, and a part that fails."""

from __future__ import annotations

import json
import re

import pytest

from experiments.reproducing import report, runner, suites
from tests.helpers import REPO_ROOT, histogram, read_events, run_python
from vaejax import io


def _data_flags(tfds_dir, raw_dir) -> list[str]:
    return ["--data_dir", str(tfds_dir), "--raw_data_dir", str(raw_dir)]


def test_every_suite_lists_its_parts_in_an_order_that_works():
    for suite in suites.SUITES:
        parts = suites.parts(suite, ("--data_dir", "D"))
        names = [p.name for p in parts]
        assert len(set(names)) == len(names) == 13
        for i, part in enumerate(parts):
            assert set(part.uses()) <= set(names[:i]), part.name  # needs only earlier parts
        assert {p.table for p in parts} == {"training", "likelihood", "quality", "benchmark"}
    gpu = {p.name: p for p in suites.parts("gpu")}
    assert "--samples" in gpu["nll_iwae2_k50"].flags and "5000" in gpu["nll_iwae2_k50"].flags
    assert gpu["quality_ddpm_best"].flags[:4] == ("--runs", "{ddpm}", "--sampler", "ddpm")
    command = runner.command_of(gpu["quality"], runner.Path("/r"))
    assert command[3:5] == ["--runs", "/r/vae1,/r/dcgan,/r/wgan_gp,/r/ddpm"]
    with pytest.raises(ValueError, match="unknown suite 'tpu'"):
        suites.parts("tpu")


def test_smoke_suite_stopped_then_continued_writes_every_table(
    tmp_path, mnist_tfds_dir, mnist_raw_dir
):
    root, tables, gallery = tmp_path / "suite", tmp_path / "results.md", tmp_path / "gallery"
    argv = ["-m", "experiments.reproduce", "--suite", "smoke", "--workdir", str(root)]
    argv += [*_data_flags(mnist_tfds_dir, mnist_raw_dir), "--tables", str(tables)]
    stopped = run_python([*argv, "--stop_after", "0.5"])
    assert stopped.returncode == runner.UNFINISHED, stopped.stderr[-2000:]
    assert "reproduce: stopped by --stop_after in part classifier" in stopped.stdout
    state = json.loads((root / runner.STATE).read_text())
    assert list(state["parts"]) == ["classifier"] and not state["parts"]["classifier"]["done"]

    proc = run_python([*argv, "--gallery", str(gallery), "--jobs", "2"], timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = json.loads((root / runner.STATE).read_text())
    assert all(record["done"] for record in state["parts"].values())
    assert len(state["parts"]["classifier"]["seconds"]) == 2  # stopped, then run again
    assert all(len(r["seconds"]) == 1 for n, r in state["parts"].items() if n != "classifier")
    page = tables.read_text()
    for section in ("Likelihood", "Sample quality", "Trainings", "Benchmark"):
        assert f"## {section}" in page
    assert "Not yet run" not in page and "Not finished" not in page
    assert "Up to 2 parts ran at once on the same machine (`--jobs 2`" in page
    likelihood = [line for line in page.splitlines() if "| 20, 100 |" in line]
    assert len(likelihood) == 3 and all(re.search(r"\| no \(\+\d", line) for line in likelihood)
    nll = json.loads((root / "iwae2_k50" / "likelihood_20.json").read_text())["test_nll"]
    assert f"{nll:.2f} ±" in page  # the table holds what the evaluation wrote
    assert page.count("real test images (100 images)") == 2
    scores = json.loads((root / "quality" / "sample_quality.json").read_text())["rows"]
    fid = {row["name"].split("/")[-1]: row["fid"] for row in scores}
    met = "yes" if fid["wgan_gp"] <= fid["dcgan"] else "no"  # the WGAN-GP against the DCGAN
    assert f"| no worse than the DCGAN | {met} |" in page
    assert "| mlp | jax_epoch |" in page and "| mlp | torch_tuned |" in page
    bench = json.loads((root / "benchmark" / "benchmark.json").read_text())
    assert bench["batch_sweep"] == bench["device_sweep"] == []
    assert {p.name for p in gallery.iterdir()} == {name for _, _, name in report.GALLERY}
    for gan in ("dcgan", "wgan_gp", "ddpm"):  # the per-epoch judge, also in TensorBoard
        last = io.read_jsonl(root / gan / "metrics.jsonl")[-1]
        assert last["fid"] > 0 and sum(last["class_histogram"]) == 50
        events = {(step, tag): value for step, tag, value in read_events(root / gan)}
        assert events[last["step"], "fid"] == pytest.approx(last["fid"])
        read = events[last["step"], "class_histogram"]
        assert histogram(read, 10) == last["class_histogram"]
        assert (last["step"], "samples") in events

    again = run_python([*argv])  # everything finished: nothing runs, the page is rewritten
    assert again.returncode == 0 and "reproduce: [" not in again.stdout
    report_only = tmp_path / "report.md"
    again = run_python([*argv[:-2], "--tables", str(report_only), "--report"])
    assert again.returncode == 0 and "reproduce: [" not in again.stdout
    assert report_only.read_text().count("| no (+") == 3
    _check_the_likelihood_parts(root)


def _check_the_likelihood_parts(root):
    """What the two-layer IWAE run and its evaluation wrote; the evaluation's bad inputs."""
    run = root / "iwae2_k50"
    assert "burda2 VAE, IWAE bound, k = 50" in (root / "logs" / "iwae2_k50.log").read_text()
    last = io.read_jsonl(run / "metrics.jsonl")[-1]
    assert last["test_negative_iwae_bound"] <= last["test_negative_elbo"]
    assert last["test_loss"] == last["test_negative_iwae_bound"]
    result = json.loads((run / "likelihood_20.json").read_text())
    assert result["binarization"] == "dynamic" and result["test_examples"] == 100
    assert result["objective"] == "iwae" and result["samples"] == 20
    assert result["test_nll"] < result["test_negative_elbo"]  # L_20 > ELBO on average
    assert 0 < result["test_nll_standard_error"] < 5
    (root / "empty").mkdir()
    for argv, message in [
        (["--workdir", str(root / "empty")], "holds no finished run"),
        (["--workdir", str(run), "--samples", "0"], "--samples must be positive"),
    ]:
        proc = run_python(["-m", "experiments.evaluate_likelihood", *argv])
        assert proc.returncode == 2 and message in proc.stderr
        assert proc.stderr.strip().count("\n") == 0
    (run / "params.msgpack").write_bytes(b"not msgpack at all")
    proc = run_python(["-m", "experiments.evaluate_likelihood", "--workdir", str(run)])
    assert proc.returncode == 2 and "is damaged or belongs to another model" in proc.stderr


def test_fashion_mnist_suites_train_score_and_evaluate_on_it_without_the_mnist_only_parts():
    for suite in suites.SUITES:
        parts = {p.name: p for p in suites.parts(suite, ("--data_dir", "D"), "fashion_mnist")}
        assert list(parts) == [
            "classifier",
            "vae1",
            "nll_vae1",
            "dcgan",
            "wgan_gp",
            "ddpm",
            "quality",
            "quality_ddpm_best",
        ]
        for name, part in parts.items():
            flags = " ".join(part.flags)
            if name == "nll_vae1":  # evaluates the run on the run's own dataset
                assert "--dataset" not in flags and part.target == ""
            else:
                assert "--dataset fashion_mnist" in flags and flags.endswith("--data_dir D")
    assert suites.label("cpu") == "cpu" and suites.label("cpu", "fashion_mnist") == (
        "cpu, Fashion-MNIST"
    )
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'"):
        suites.parts("cpu", (), "cifar10")


def test_quality_rows_judge_each_source_by_its_target_and_say_whose_targets_they_are(tmp_path):
    rows = [
        ("real test images", 1.9, 9.5),
        ("gan: w/dcgan", 41.0, 8.0),
        ("gan: w/wgan_gp", 40.5, 7.9),
        ("ddim50: w/ddpm", 24.9, 9.1),
        ("ddim100: w/ddpm", 14.9, 5.7),
    ]
    scored = [
        {"name": n, "fid": f, "inception_score": i, "images": 2000, "classes_covered": 10}
        for n, f, i in rows
    ]
    record = {"done": True, "seconds": [60], "finished": "2026-01-01 00:00 UTC"}
    names = ("quality", "quality_ddpm_best")
    for name, part_rows in zip(names, (scored[:4], [scored[0], scored[4]])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "sample_quality.json").write_text(json.dumps({"rows": part_rows}))
    (tmp_path / runner.STATE).write_text(json.dumps({"parts": dict.fromkeys(names, record)}))
    parts = [p for p in suites.parts("cpu") if p.name in names]
    mnist = report.page("cpu", parts, tmp_path, "cmd")
    assert "| 41.00 | 8.00 | 10 | FID <= 40 | no |" in mnist
    assert "| 40.50 | 7.90 | 10 | no worse than the DCGAN | yes |" in mnist
    assert "| 24.90 | 9.10 | 10 | FID <= 25 (DDIM <= 100 steps) | yes |" in mnist
    assert "| 14.90 | 5.70 | 10 | FID <= 15, IS >= 9.0 | no |" in mnist
    assert "| 1.90 | 9.50 | 10 | the floor |  |" in mnist
    assert "MNIST's judge" not in mnist
    fashion = report.page("cpu, Fashion-MNIST", parts, tmp_path, "cmd", "fashion_mnist")
    assert "The FID targets are MNIST's, set on MNIST's judge" in fashion
    assert "| 14.90 | 5.70 | 10 | FID <= 15 | yes |" in fashion
    assert "| 41.00 | 8.00 | 10 | FID <= 40 | no |" in fashion


def test_a_failing_part_is_one_line_naming_its_log(tmp_path):
    part = suites.Part(
        "nll_missing",
        "experiments.evaluate_likelihood",
        ("--samples", "2"),
        "likelihood",
        "a run that is not there",
        evaluates="nowhere",
    )
    lines = []
    (tmp_path / runner.STATE).write_text(
        json.dumps({"suite": "smoke", "parts": {"nowhere": {"done": True, "seconds": [0]}}})
    )
    with pytest.raises(runner.SuiteError) as error:
        runner.run_suite("smoke", [part], tmp_path, say=lines.append)
    message = str(error.value)
    assert message.startswith("part nll_missing failed (exit 2): error: ")
    assert "holds no finished run" in message and "\n" not in message
    assert str(tmp_path / "logs" / "nll_missing.log") in message
    with pytest.raises(runner.SuiteError, match="holds the 'smoke' suite, not 'cpu'"):
        runner.run_suite("cpu", [part], tmp_path, say=lines.append)
    other = suites.label("smoke", "fashion_mnist")  # the same suite on another dataset
    with pytest.raises(runner.SuiteError, match="not 'smoke, Fashion-MNIST'"):
        runner.run_suite(other, [part], tmp_path, say=lines.append)
    blocked = suites.Part("late", "experiments.classifier", ("--x", "{early}"), "training", "")
    with pytest.raises(runner.SuiteError, match="part late needs early finished first"):
        runner.run_suite("smoke", [blocked], tmp_path, say=lines.append)


def _stub(name: str, seconds: float, *, after: str = "", status: int = 0, alone=False):
    flags = ("--seconds", str(seconds), "--status", str(status))
    flags += ("--after", "{" + after + "}") if after else ()
    return suites.Part(name, "tests.stub_part", flags, "training", name, alone=alone)


def _times(root, name) -> dict:
    return json.loads((root / name / "times.json").read_text())


@pytest.fixture
def stub_runner(monkeypatch):
    """run_suite on stand-in parts (tests.stub_part), without asking jax for the machine."""
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(runner, "describe_machine", lambda: "test machine")
    return runner.run_suite


def test_jobs_run_parts_side_by_side_and_alone_parts_by_themselves(tmp_path, stub_runner):
    parts = [_stub("a", 1.5), _stub("b", 1.5), _stub("c", 1.5)]
    parts += [_stub("d", 0.3, alone=True), _stub("e", 0.3, after="a")]
    lines = []
    assert stub_runner("smoke", parts, tmp_path, jobs=4, say=lines.append) == 0
    t = {p.name: _times(tmp_path, p.name) for p in parts}
    assert max(t[n]["start"] for n in "abc") < min(t[n]["end"] for n in "abc")  # overlapped
    assert t["d"]["start"] >= max(t[n]["end"] for n in "abc")  # alone: after every other
    assert t["e"]["start"] >= t["d"]["end"]  # no part passes an alone one
    state = json.loads((tmp_path / runner.STATE).read_text())
    assert all(r["done"] and r["jobs"] == 4 for r in state["parts"].values())
    assert sum("done in" in line for line in lines) == 5

    one = tmp_path / "one"  # one at a time: in order, never side by side
    assert stub_runner("smoke", parts[:3], one, jobs=1, say=lines.append) == 0
    t = [_times(one, n) for n in "abc"]
    assert t[0]["end"] <= t[1]["start"] and t[1]["end"] <= t[2]["start"]


def test_stop_after_stops_every_running_part_in_one_line(tmp_path, stub_runner):
    parts = [_stub("x", 60), _stub("y", 60), _stub("z", 0.1, after="x")]
    lines = []
    status = stub_runner("smoke", parts, tmp_path, jobs=2, stop_after=2.0, say=lines.append)
    assert status == runner.UNFINISHED
    assert lines[-1].startswith("reproduce: stopped by --stop_after in parts x, y (their runs")
    state = json.loads((tmp_path / runner.STATE).read_text())
    assert [n for n, r in state["parts"].items() if not r["done"]] == ["x", "y"]  # z never ran
    assert all(_times(tmp_path, n).get("stopped") for n in "xy")  # SIGTERM: each saved


def test_a_failing_part_beside_others_fails_once_they_end(tmp_path, stub_runner):
    parts = [_stub("f", 0.2, status=3), _stub("g", 1.5), _stub("h", 0.1)]
    with pytest.raises(runner.SuiteError) as error:
        stub_runner("smoke", parts, tmp_path, jobs=2, say=lambda line: None)
    assert str(error.value).startswith("part f failed (exit 3): error: this part was told to fail")
    state = json.loads((tmp_path / runner.STATE).read_text())
    assert state["parts"]["g"]["done"] and "h" not in state["parts"]  # nothing starts after
    proc = run_python(["-m", "experiments.reproduce", "--jobs", "0"])
    assert proc.returncode == 2 and proc.stderr == "error: --jobs must be at least 1, got 0\n"
