"""Load the lme4 reference cases copied from the shared reference set (see reference/README.md)."""

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

REFERENCE = Path(__file__).parent / "reference"

#: Cases with one grouping factor, fitted by the core estimator.
ONE_FACTOR = [
    "sleepstudy_reml",
    "sleepstudy_ml",
    "sleepstudy_diag_reml",
    "dyestuff_reml",
    "dyestuff_ml",
    "dyestuff2_reml",
    "orthodont_reml",
]


@dataclass
class Case:
    """One lme4 fit: the data split, the model, and lme4's numbers."""

    name: str
    spec: dict
    lme4: dict
    train: pd.DataFrame
    test: pd.DataFrame

    @property
    def term(self):
        return self.spec["random"][0]

    @property
    def x_columns(self):
        """Fixed-effect design columns without the intercept, named without 'X:'."""
        return [c for c in self.spec["fixed"] if c != "(Intercept)"]

    def X(self, frame):
        cols = {c: frame["X:" + c].to_numpy(float) for c in self.x_columns}
        return pd.DataFrame(cols, index=frame.index, columns=self.x_columns)

    def y(self, frame):
        return frame[self.spec["response"]].to_numpy(float)

    def groups(self, frame):
        return frame[self.term["group"]].astype(str).to_numpy()

    def estimator_params(self):
        slopes = [s for s in self.term["slopes"] if s != "(Intercept)"]
        return {
            "random_slopes": slopes or None,
            "covariance_type": self.term["cov"],
            "reml": self.spec["reml"],
            "fit_intercept": "(Intercept)" in self.spec["fixed"],
        }


def load_case(name):
    folder = REFERENCE / name
    spec = json.loads((folder / "spec.json").read_text())
    lme4 = json.loads((folder / "lme4.json").read_text())
    data = pd.read_csv(folder / "data.csv", dtype={c: str for c in spec["group_columns"]})
    return Case(
        name=name,
        spec=spec,
        lme4=lme4,
        train=data[data["split"] == "train"],
        test=data[data["split"] == "test"],
    )
