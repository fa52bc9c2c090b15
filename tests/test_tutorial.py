"""The tutorial notebook, docs/tutorial.ipynb: executed from a copy, it runs without an error,
every section draws at least one picture, and its numbers are sane; the committed notebook shows
its pictures without running and holds no error and no path of the machine that executed it."""

from __future__ import annotations

import json
import os
import re
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import REPO_ROOT

NOTEBOOK = REPO_ROOT / "docs" / "tutorial.ipynb"
SECTIONS = range(1, 8)  # "## 1. ..." to "## 7. ...": autoencoder, VAE, ..., DDPM
CELL_TIMEOUT = 300  # seconds for one cell; the longest, the DDPM's run, takes about 45 s on 2 cores

# run after the notebook's own cells: the numbers it computed, as one JSON line
REPORT = """\
import json
import os

print(json.dumps({
    "compilation_cache": os.environ.get("JAX_COMPILATION_CACHE_DIR"),
    "vae_negative_elbo": float(record["test_negative_elbo"]),
    "vae_bound": float(bound.mean()),
    "auc": {name: float(value) for name, value in auc.items()},
    "ddpm_noise_mse": float(ddpm_record["test_loss"]),
}))
"""

# absolute paths of the machine that executed the notebook, in any output text
MACHINE_PATH = re.compile(r"/work/|/tmp/|/home/|/Users/|/root/|/private/|[A-Za-z]:\\")


def _images_per_section(notebook) -> dict[int, int]:
    """{section number: image/png outputs of the code cells under its '## N.' heading}."""
    counts, section = {}, None
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            heading = re.search(r"^## (\d+)\. ", cell.source, re.MULTILINE)
            if heading:
                section = int(heading[1])
                counts[section] = 0
        elif cell.cell_type == "code" and section is not None:
            counts[section] += sum("image/png" in out.get("data", {}) for out in cell.outputs)
    return counts


def _output_texts(notebook):
    """(cell index, text) of every stream and text output (not the pictures' data)."""
    for index, cell in enumerate(notebook.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                yield index, out.text
            elif out.output_type == "error":
                yield index, "\n".join([out.ename, out.evalue, *out.traceback])
            else:
                for mime, value in out.get("data", {}).items():
                    if mime.startswith("text/"):
                        yield index, value if isinstance(value, str) else "".join(value)


@pytest.fixture
def executed(tmp_path_factory, mnist_raw_dir, mnist_tfds_dir):
    """A copy of the notebook, executed in a fresh python3 kernel of this interpreter with the
    shared MNIST files (the committed file is left as it is), and the JSON of its numbers."""
    folder = tmp_path_factory.mktemp("tutorial")
    copy = folder / NOTEBOOK.name
    shutil.copyfile(NOTEBOOK, copy)
    notebook = nbformat.read(copy, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(REPORT))
    # the kernel inherits this environment, JAX_COMPILATION_CACHE_DIR (tests/conftest.py)
    # included; its temporary folder, where the runs' workdirs go, is this test's
    env = dict(
        os.environ,
        VAEJAX_RAW_DATA_DIR=str(mnist_raw_dir),
        VAEJAX_DATA_DIR=str(mnist_tfds_dir),
        TMPDIR=str(folder),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute(env=env)  # CellExecutionError, with the cell and its traceback, if one raised
    nbformat.write(notebook, copy)
    report = notebook.cells[-1].outputs
    lines = [out.text for out in report if out.output_type == "stream" and out.name == "stdout"]
    return notebook, json.loads("".join(lines).strip().splitlines()[-1])


def test_the_notebook_runs_draws_in_every_section_and_computes_sane_numbers(executed):
    notebook, numbers = executed
    assert not [
        index
        for index, cell in enumerate(notebook.cells)
        for out in cell.get("outputs", [])
        if out.output_type == "error"
    ]
    counts = _images_per_section(notebook)
    assert sorted(counts) == list(SECTIONS), counts
    assert all(counts[section] >= 1 for section in SECTIONS), counts
    # the kernel compiled into the test session's cache (tests/conftest.py)
    assert numbers["compilation_cache"] == os.environ["JAX_COMPILATION_CACHE_DIR"]
    # the untrained VAE's test -ELBO is about 550 nats/image; five short epochs reach about 133
    assert 50 < numbers["vae_negative_elbo"] < 200, numbers
    # the importance-weighted bound (k = 100) is tighter than the ELBO, and not absurdly so
    assert numbers["vae_negative_elbo"] - 30 < numbers["vae_bound"] < numbers["vae_negative_elbo"]
    # both anomaly scores rank the rotated digits above the normal ones (about 0.87 and 0.9)
    assert set(numbers["auc"]) == {"VAE", "autoencoder"}, numbers
    assert all(0.7 < auc <= 1.0 for auc in numbers["auc"].values()), numbers
    # the untrained denoiser's noise MSE is about 1
    assert 0.0 < numbers["ddpm_noise_mse"] < 0.5, numbers


def test_committed_notebook_shows_its_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code), "save it executed"
    counts = _images_per_section(notebook)
    assert sorted(counts) == list(SECTIONS), counts
    assert all(counts[section] >= 1 for section in SECTIONS), counts
    errors = [
        index
        for index, cell in enumerate(notebook.cells)
        for out in cell.get("outputs", [])
        if out.output_type == "error" or (out.output_type == "stream" and "Traceback" in out.text)
    ]
    assert not errors, f"cells {errors} hold errors"
    paths = [
        (index, found[0])
        for index, text in _output_texts(notebook)
        if (found := MACHINE_PATH.search(text))
    ]
    assert not paths, f"outputs name paths of the machine that ran them: {paths}"
    # no per-cell execution timings: rerunning the notebook changes only what it computes
    assert not [cell for cell in notebook.cells if "execution" in cell.metadata]
    assert NOTEBOOK.stat().st_size < 1_500_000
