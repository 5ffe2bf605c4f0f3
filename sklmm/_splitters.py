"""Whole-group cross-validation when ``groups`` has several columns (crossed or nested factors).

scikit-learn's group splitters (``GroupKFold``, ``LeaveOneGroupOut``, ...) take one label
per row; a DataFrame of several factors, which a crossed or nested model needs as
``groups``, breaks them. :class:`SplitByFactor` hands them the column (or the
interaction of columns) to hold out, so the same ``groups`` goes to the splitter and to
``fit``.
"""

import numpy as np
import pandas as pd
from sklearn.utils.metadata_routing import MetadataRequest

from ._validation import as_pandas


class SplitByFactor:
    """Split by the levels of one factor of a DataFrame of group labels.

    Wraps a scikit-learn group splitter so that it receives one column of a
    multi-column ``groups`` (the factor to hold out), while the estimator gets the
    whole DataFrame. With metadata routing enabled it requests ``groups`` for
    ``split``, as scikit-learn's group splitters do.

    Parameters
    ----------
    cv : cross-validation splitter
        A splitter that uses groups, for example ``GroupKFold(5)``,
        ``LeaveOneGroupOut()`` or ``GroupShuffleSplit(...)``.
    factor : str or list of str
        The column of ``groups`` whose levels are held out whole. Several columns
        (a list, or names joined by ``":"`` as in the term ``"batch:cask"``) hold out
        their combinations.

    Notes
    -----
    Which factor to hold out follows the question the score answers. To score
    predictions for new levels of a factor (new subjects, new items), hold out that
    factor: the other terms' levels are still seen in ``fit``. For nested factors
    (``cask`` within ``batch``) hold out the outer one to predict new batches, or the
    interaction ``"batch:cask"`` to predict new casks of known batches. Holding out
    nothing (``KFold``) scores predictions for new rows of known levels.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from sklearn.model_selection import GroupKFold
    >>> from sklmm import SplitByFactor
    >>> groups = pd.DataFrame({"subject": np.repeat([1, 2, 3], 2), "item": [1, 2] * 3})
    >>> cv = SplitByFactor(GroupKFold(n_splits=3), "subject")
    >>> sorted(test.tolist() for _, test in cv.split(np.zeros((6, 1)), groups=groups))
    [[0, 1], [2, 3], [4, 5]]
    """

    def __init__(self, cv, factor):
        self.cv = cv
        self.factor = factor

    def _factors(self, columns):
        factor = self.factor
        if isinstance(factor, str):
            factor = [factor] if factor in columns else factor.split(":")
        factor = list(factor)
        if not factor or not all(isinstance(f, str) for f in factor):
            raise ValueError(
                f"factor must be a column name or a list of column names, got {self.factor!r}"
            )
        return factor

    def _labels(self, groups):
        """The labels of the factor to hold out: one per row."""
        if groups is None:
            raise ValueError(
                "SplitByFactor needs groups: pass cross_validate(..., params={'groups': G}) "
                "with metadata routing enabled (or groups=G without it), G being the "
                "DataFrame of group labels also given to fit"
            )
        groups = as_pandas(groups)
        if isinstance(groups, pd.Series):
            groups = groups.to_frame(self.factor if groups.name is None else groups.name)
        if not isinstance(groups, pd.DataFrame):
            arr = np.asarray(groups)
            if arr.ndim == 1:
                return arr
            raise ValueError(
                f"SplitByFactor takes groups as a DataFrame (to find the column "
                f"{self.factor!r}), got an array of shape {arr.shape}"
            )
        names = [str(c) for c in groups.columns]
        factor = self._factors(names)
        missing = [f for f in factor if f not in names]
        if missing:
            raise ValueError(
                f"SplitByFactor holds out {self.factor!r}, but groups has no column "
                f"{missing} (columns: {names})"
            )
        frame = groups.set_axis(names, axis=1)[factor]
        if len(factor) == 1:
            return frame.iloc[:, 0].to_numpy()
        return pd.MultiIndex.from_frame(frame).factorize()[0]

    def split(self, X, y=None, groups=None):
        """Generate train and test indices, holding out whole levels of the factor.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,), default=None
            Target.
        groups : DataFrame of shape (n_samples, n_factors)
            The group labels, as given to ``fit``.

        Yields
        ------
        train, test : ndarray
            Indices of the training and test rows of each split.
        """
        yield from self.cv.split(X, y, self._labels(groups))

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits of the wrapped splitter.

        Parameters
        ----------
        X, y : object, default=None
            Passed on to the wrapped splitter.
        groups : DataFrame, default=None
            The group labels (needed by splitters such as ``LeaveOneGroupOut``).

        Returns
        -------
        int
            Number of splits.
        """
        labels = None if groups is None else self._labels(groups)
        return self.cv.get_n_splits(X, y, labels)

    def get_metadata_routing(self):
        """Request ``groups`` for ``split`` (scikit-learn's routing protocol).

        Returns
        -------
        MetadataRequest
            The request.
        """
        request = MetadataRequest(owner=type(self).__name__)
        request.split.add_request(param="groups", alias=True)
        return request

    def __repr__(self):
        return f"SplitByFactor(cv={self.cv!r}, factor={self.factor!r})"
