"""The quick-start notebook (examples/quickstart.ipynb) runs top to bottom.

Every part of the notebook asserts on its outputs, so a change to the API it
shows (load_dataset, make_scenario, load_config, Runner, the method protocol,
the registry, the State's fields, grids of seeds and points) fails here.  The
notebook is executed in a fresh kernel that imports this checkout's clj;
nothing is written back to it.

To refresh the outputs committed with the notebook (after changing it)::

    python tests/test_notebook.py --write
"""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "examples", "quickstart.ipynb")
INSTALL = "pip install nbclient nbformat ipykernel (or pip install -e '.[test]')"


def execute(path: str, cwd: str):
    """Runs the notebook at ``path`` in a new kernel started in ``cwd``, with
    this checkout first on the kernel's import path; returns the executed
    notebook (nbformat)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # no timestamps in the saved notebook
        cell.metadata.pop("execution", None)
    env_before = {k: os.environ.get(k) for k in ("PYTHONPATH", "JAX_PLATFORMS")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env_before["PYTHONPATH"]) if p)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    try:  # the kernel is a child process: it inherits this environment
        NotebookClient(nb, timeout=None, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": cwd}}).execute()
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def test_quickstart_notebook_runs(tmp_path):
    for module in ("nbclient", "nbformat", "ipykernel"):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{module} is not installed; to run the notebook test: {INSTALL}")
    nb = execute(NOTEBOOK, str(tmp_path))
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code)  # every cell ran


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_notebook.py --write   (executes the notebook and saves its outputs)")
    import tempfile

    import nbformat

    with tempfile.TemporaryDirectory() as d:
        executed = execute(NOTEBOOK, d)
    nbformat.write(executed, NOTEBOOK)
    print(f"executed {os.path.relpath(NOTEBOOK, ROOT)}; outputs saved")
