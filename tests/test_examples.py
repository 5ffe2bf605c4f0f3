"""Every script of examples/ (the documentation's gallery) runs without error or warning."""

import runpy
from pathlib import Path

import pytest
import sklearn

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(path.parent)
    try:
        with sklearn.config_context():  # an example may change the global config
            runpy.run_path(str(path), run_name="__main__")
    finally:
        plt.close("all")


def test_examples_found():
    assert len(EXAMPLES) >= 5
