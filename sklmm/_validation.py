"""Validation of the data: covariates, label columns and the cross-products' warnings signs.

Shared by every input path (in memory and Dask) and every model. Pure numpy/pandas:
nothing here knows of the estimator.
"""

import numpy as np
import pandas as pd

_ONE_HOT = (
    "sklearn.preprocessing.OneHotEncoder(drop='first') in a ColumnTransformer with "
    "set_output(transform='pandas'): drop='first' next to the intercept, pandas output "
    "to keep the column names"
)


def _is_dask(obj):
    return type(obj).__module__.partition(".")[0] in ("dask", "dask_expr")


def _pandas_series(column, name):
    """A pandas Series from a narwhals Series (categories kept).

    An ``Enum`` keeps its declared order of categories (the first is a formula's
    reference level) but is not ordinal (R's ``factor``, not ``ordered``: no polynomial
    contrasts); a ``Categorical``, whose order is that of polars' string cache, gets
    sorted categories, as strings do.
    """
    import narwhals.stable.v1 as nw

    values = column.to_numpy()
    out = pd.Series(values, name=name)
    if column.dtype == nw.Enum:
        categories = column.cat.get_categories().to_numpy()
        out = out.astype(pd.CategoricalDtype(categories, ordered=False))
    elif column.dtype == nw.Categorical:
        categories = sorted(column.cat.get_categories().to_list())
        out = out.astype(pd.CategoricalDtype(categories, ordered=False))
    return out


def as_pandas(obj):
    """The pandas form of a DataFrame or Series of another library; anything else unchanged.

    polars, pyarrow, modin and the other libraries narwhals knows keep their column names
    (and categories) for ``X``, ``groups`` and ``variance_components``, as pandas does.
    narwhals is imported only for such input.
    """
    if (
        obj is None
        or isinstance(obj, (pd.DataFrame, pd.Series, np.ndarray, list, tuple, str))
        or np.isscalar(obj)
        or _is_dask(obj)
    ):
        return obj
    import narwhals.stable.v1 as nw

    native = nw.from_native(obj, pass_through=True, eager_only=True, allow_series=True)
    if isinstance(native, nw.DataFrame):
        return pd.DataFrame({c: _pandas_series(native[c], c) for c in native.columns})
    if isinstance(native, nw.Series):
        return _pandas_series(native, native.name or None)
    return obj


def prepare_X(X):
    """Reject non-numeric or complex columns by name; let ``X`` have zero columns.

    An intercept-only model (lme4 ``y ~ 1 + (1 | g)``) is fitted from an ``X`` with
    no columns. Returns ``X`` (never modified; a DataFrame of another library as
    pandas) or an empty float array.
    """
    X = as_pandas(X)
    if isinstance(X, pd.DataFrame) and X.shape[1] == 0:
        return np.zeros((X.shape[0], 0))
    if np.iscomplexobj(np.asarray(X)):
        raise ValueError(
            "Complex data not supported: X contains complex numbers; mixed models "
            "need real-valued columns"
        )
    if isinstance(X, np.ndarray) and X.dtype.kind in "mM":
        raise ValueError(
            f"X has dtype {X.dtype} (dates or durations); convert them to numbers first "
            "(for example days since the first date)"
        )
    if isinstance(X, np.ndarray) and X.dtype.kind in "OUS" and X.ndim == 2:
        for j in range(X.shape[1]):
            try:
                X[:, j].astype(np.float64)
            except ValueError:
                raise ValueError(
                    f"X has a non-numeric column at position {j} (first value "
                    f"{X[0, j]!r}); encode it first (for example with "
                    f"{_ONE_HOT})"
                ) from None
    if isinstance(X, pd.DataFrame):
        duplicated = X.columns[X.columns.duplicated()].unique().tolist()
        if duplicated:
            raise ValueError(f"X has duplicate column names {duplicated}; name every column once")
        dates = [
            c
            for c in X.columns
            if pd.api.types.is_datetime64_any_dtype(X[c]) or pd.api.types.is_timedelta64_dtype(X[c])
        ]
        if dates:
            c = dates[0]
            raise ValueError(
                f"X has date or duration columns {dates}; convert them to numbers first, "
                f"for example days since the first date: (X[{c!r}] - X[{c!r}].min()).dt.days"
            )
        bad = [
            c
            for c in X.columns
            if not (pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))
        ]
        numbers = {}
        for c in bad:  # object columns holding numbers, as an object ndarray is accepted
            if X[c].dtype == object:
                try:
                    numbers[c] = pd.to_numeric(X[c], errors="raise")
                except (TypeError, ValueError):
                    continue
        if numbers:
            X = X.copy()  # never modify the input
            for c, v in numbers.items():
                X[c] = v
            bad = [c for c in bad if c not in numbers]
        if bad:
            raise ValueError(
                f"X has non-numeric columns {bad}; encode them first (for example with {_ONE_HOT})"
            )
    return X


def _one_column(values, n_rows, name):
    """A 1-D array of ``n_rows`` entries (a one-column 2-D array is taken as 1-D)."""
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {values.shape}")
    if n_rows is not None and len(values) != n_rows:
        raise ValueError(f"{name} has {len(values)} entries but X has {n_rows} rows")
    return values


def _extension(values):
    """Whether a Series holds a pandas extension array (nullable integers, ...)."""
    return not isinstance(values.dtype, np.dtype)


def check_labels(values, n_rows, name="groups"):
    """One column of labels as a 1-D numpy array, with clear errors for bad input."""
    if isinstance(values, pd.DataFrame):
        if values.shape[1] != 1:
            raise ValueError(
                f"{name} must be one column of labels, got a DataFrame with "
                f"{values.shape[1]} columns"
            )
        values = values.iloc[:, 0]
    if isinstance(values, pd.Series) and values.dtype.kind in "biuf" and not _extension(values):
        out = values.to_numpy()  # numpy numbers: no copy to objects (1M rows: ~40 ms)
    else:
        out = np.asarray(values.astype(object) if isinstance(values, pd.Series) else values)
    out = _one_column(out, n_rows, name)
    missing = pd.isna(out)
    if missing.any():
        rows = np.flatnonzero(missing)[:5].tolist()
        raise ValueError(f"{name} contains missing labels (None or NaN) at rows {rows}")
    if out.dtype.kind == "c":
        raise ValueError(f"{name} contains complex numbers; use integer or string labels")
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        rows = np.flatnonzero(~np.isfinite(out))[:5].tolist()
        raise ValueError(f"{name} contains infinite labels at rows {rows}")
    return out


class LabelNames(list):
    """Names of the label columns of ``fit``, and whether the input named them."""

    named = False


class LabelColumns(dict):
    """Named label columns (a dict ``name -> labels``) and what the input said of them.

    Attributes
    ----------
    named : bool
        Whether the names came from the input (a DataFrame's columns, a Series's name)
        rather than from the defaults (``"group"``, ``"groups0"``, ...). Only unnamed
        labels are matched to a term's factor by position.
    dtypes : dict
        The dtype of every column as given (``None`` for a list), so that the fitted
        levels keep it: integer labels stay integers, categories stay categorical.
    """

    named = False
    dtypes = None

    def names(self):
        """The column names, as a :class:`LabelNames` list that remembers ``named``."""
        out = LabelNames(self)
        out.named = self.named
        return out

    def subset(self, keep):
        """The columns on the rows ``keep`` (same names, ``named`` and dtypes)."""
        out = LabelColumns({name: np.asarray(v)[keep] for name, v in self.items()})
        out.named, out.dtypes = self.named, self.dtypes
        return out


def _dtype(values):
    dtype = getattr(values, "dtype", None)
    if dtype is None or isinstance(dtype, pd.CategoricalDtype):
        return dtype
    # Strings stay strings, whatever their storage (object, pyarrow as Dask holds them).
    return None if pd.api.types.is_string_dtype(dtype) or dtype.kind in "OSU" else dtype


def label_columns(obj, what, n_rows, check=check_labels):
    """Named 1-D label arrays from ``groups`` or ``variance_components``.

    A DataFrame (pandas, polars, ...) gives its columns; a Series its name
    (``"group"`` for unnamed groups, ``what`` otherwise); a 1-D array likewise; a 2-D
    array ``what0``, ``what1``, ... ``check(values, n, name)`` validates each column.
    Returns a :class:`LabelColumns`.
    """
    out = LabelColumns()
    out.dtypes = {}
    if obj is None:
        return out
    if isinstance(obj, str):
        example = f"df[{obj!r}]" if what == "groups" else f"df[[{obj!r}]]"
        raise ValueError(
            f"{what}={obj!r} is a string, but {what} takes the labels themselves (one per "
            f"row of X), not a column name: pass {what}={example}"
        )
    obj = as_pandas(obj)
    default = "group" if what == "groups" else what
    if isinstance(obj, pd.DataFrame):
        cols = {str(c): obj[c] for c in obj.columns}
        out.named = True
    elif isinstance(obj, pd.Series):
        cols = {str(obj.name) if obj.name is not None else default: obj}
        out.named = obj.name is not None
    else:
        arr = np.asarray(obj)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim == 1:
            cols = {default: arr}
        elif arr.ndim == 2:
            cols = {f"{what}{j}": arr[:, j] for j in range(arr.shape[1])}
        else:
            raise ValueError(f"{what} must be 1-D or 2-D, got an array of shape {arr.shape}")
    if not cols:
        raise ValueError(f"{what} has no columns")
    single = len(cols) == 1 and not isinstance(obj, pd.DataFrame)
    for name, values in cols.items():
        out.dtypes[name] = _dtype(values)
        out[name] = check(values, n_rows, what if single else f"{what} column {name!r}")
    return out


def check_slope_labels(X, random_slopes):
    """Error for integer ``random_slopes`` on a DataFrame whose integer labels are not
    the positions (``{1: ..., 0: ...}``): ``0`` could mean either column."""
    if random_slopes is None or not isinstance(X, pd.DataFrame):
        return
    columns = list(X.columns)
    if all(isinstance(c, str) for c in columns) or columns == list(range(len(columns))):
        return
    slopes = [random_slopes] if isinstance(random_slopes, (int, np.integer)) else random_slopes
    if any(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in slopes):
        raise ValueError(
            f"random_slopes={random_slopes!r} gives positions, but X's columns are labelled "
            f"{columns}, which are not their positions: name the columns with strings "
            "(X.columns = X.columns.astype(str)) and give random_slopes by name"
        )


def check_sample_weight(sample_weight, n_rows):
    """Precision weights as a float array: 1-D, one per row, finite and non-negative.

    Returns ``None`` for ``None``. Errors name the rows at fault; all-zero weights are an
    error (nothing left to fit).
    """
    if sample_weight is None:
        return None
    if isinstance(sample_weight, str):
        raise ValueError(
            f"sample_weight={sample_weight!r} is a string; pass the weights themselves, one "
            "per row of X"
        )
    w = as_pandas(sample_weight)
    try:
        w = np.asarray(w, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("sample_weight must be numbers, one per row of X") from None
    if w.ndim == 0:
        raise ValueError(
            "sample_weight must be an array of shape (n_samples,), got a scalar; for equal "
            "weights pass none (they do not change the estimates, only sigma2)"
        )
    w = _one_column(w, n_rows, "sample_weight")
    for bad, what in ((np.isnan(w), "NaN"), (np.isinf(w), "infinite"), (w < 0, "negative")):
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise ValueError(
                f"sample_weight has {int(bad.sum())} {what} value(s), at rows {rows}; "
                "precision weights must be finite and non-negative"
            )
    if not (w > 0).any():
        raise ValueError("sample_weight is zero on every row: there is nothing to fit")
    return w


def factorize(values):
    """Codes and levels of a label column (levels sorted when they can be)."""
    dtype = getattr(values, "dtype", None)
    if isinstance(values, pd.Series) and isinstance(dtype, np.dtype) and dtype.kind in "iu":
        values = values.to_numpy()  # the same codes and levels, without the Series' cost
    try:
        return pd.factorize(values, sort=True)
    except TypeError:  # labels of mixed, unorderable types
        return pd.factorize(values, sort=False)


def match_labels(levels, values):
    """Positions of ``values`` among the fitted ``levels`` (-1 for unseen).

    Labels are matched as they are; when the kinds differ (numbers in fit, strings at
    predict, or the reverse), they are matched by their string forms, so that ``308``
    and ``"308"`` name the same group, and else by value, so that ``1.0`` and ``"1"``
    do too.
    """
    idx = pd.Index(levels).get_indexer(values)
    numeric = [
        pd.api.types.infer_dtype(np.asarray(a), skipna=False)
        in ("integer", "floating", "mixed-integer-float", "decimal")
        for a in (levels, values)
    ]
    if numeric[0] != numeric[1] and len(values):
        as_str = pd.Index(np.asarray(levels).astype(str)).get_indexer(
            np.asarray(values).astype(str)
        )
        idx = np.where(idx >= 0, idx, as_str)
        idx = np.where(idx >= 0, idx, _match_by_value(levels, values))
    return idx


def _match_by_value(levels, values):
    """Positions of numbers written as text among numeric levels, or the reverse (-1: none).

    ``"1"`` and ``1.0`` name the same level. Only where the numbers are exact in float64
    and name one level each: otherwise every position is -1 (matched by text alone).
    """
    none = np.full(len(values), -1)

    def as_float(a):
        numbers = pd.to_numeric(pd.Series(np.asarray(a, dtype=object)), errors="coerce")
        out = numbers.to_numpy(dtype=float, na_value=np.nan)
        exact = np.abs(np.nan_to_num(out)) <= 2.0**53
        return np.where(exact, out, np.nan)

    lv, vv = as_float(levels), as_float(values)
    known = ~np.isnan(lv)
    lookup = pd.Index(lv[known])
    if not known.any() or not lookup.is_unique:  # "1" and "1.0" both fitted: the text
        return none
    found = lookup.get_indexer(vv)
    positions = np.flatnonzero(known)
    return np.where((found >= 0) & ~np.isnan(vv), positions[np.maximum(found, 0)], -1)


def check_y_range(y_max_abs, n):
    """Error when ``y`` is too large to square and sum ``n`` times in float64."""
    if y_max_abs > np.sqrt(np.finfo(np.float64).max / n):
        raise ValueError(
            f"y has values too large to square and sum in float64 (max |y| = {y_max_abs:.3g}); "
            "rescale it"
        )


def collinear_columns(XtX, names):
    """Columns that are zero or linear combinations of earlier ones, and how.

    Returns
    -------
    dropped : list of str
        Their names.
    sums : bool
        Whether some combination is a sum of columns with equal coefficients, as a full
        set of one-hot dummies is (their sum is the constant 1).
    """
    d = np.sqrt(np.diag(XtX))
    zero = d <= 0
    d[zero] = 1.0
    corr = XtX / np.outer(d, d)
    if not zero.any() and len(names):
        w = np.linalg.eigvalsh(corr)  # the common case in one call: no column is dropped
        if w[0] > 1e-10 * max(1.0, w[-1]):
            return [], False
    dropped, kept, sums = [], [], False
    for j in range(len(names)):
        if zero[j]:
            dropped.append(names[j])
            continue
        trial = [*kept, j]
        w, v = np.linalg.eigh(corr[np.ix_(trial, trial)])
        if w[0] <= 1e-10 * max(1.0, w[-1]):
            dropped.append(names[j])
            raw = v[:, 0] / d[trial]  # the combination on the columns' own scale
            raw = raw[[names[i] != "(Intercept)" for i in trial]]
            big = raw[np.abs(raw) > 1e-6 * np.abs(raw).max()]
            sums |= len(big) >= 2 and bool(np.allclose(big, big[0], rtol=1e-6))
        else:
            kept.append(j)
    return dropped, sums


def _collinear_message(dropped, fixed_names, names_given, one_hot):
    """The error for collinear columns, with the likely cause and its fix.

    ``names_given == "formula"``: the columns come from a formula's model matrix.
    """
    if names_given == "formula":
        return (
            f"the formula's fixed-effect columns {dropped} are constant or linear "
            "combinations of other columns (the intercept included): remove the terms "
            "that make them from the formula (lme4 drops such columns with a message; "
            "sklmm asks, so that the model is the one written)"
        )
    message = (
        f"the fixed-effect columns {dropped} are constant or linear combinations of other "
        "columns (the intercept included); remove them from X."
    )
    if one_hot and "(Intercept)" in fixed_names:
        message += (
            " Columns that sum to a constant, as a full set of one-hot dummies does, are "
            "collinear with the intercept: use OneHotEncoder(drop='first') (R's treatment "
            "contrasts), or fit_intercept=False."
        )
    if not names_given:
        message += (
            " X has no column names (x0, x1, ... are positions): set_output(transform="
            "'pandas') on a ColumnTransformer or Pipeline keeps them."
        )
    return message


def check_fixed_effects(
    cp, n, col_means, fixed_names, fit_intercept, weight_total=None, names_given=True
):
    """Errors for too few rows, constant or collinear columns and an exactly fitted y.

    ``cp`` is ``[X y]'W[X y]`` of the centred design (intercept column first when
    fitted); ``fixed_names`` names its first ``p`` columns; ``weight_total`` is the sum
    of the weights (``n`` without weights); ``names_given`` whether ``X`` named its
    columns (else the messages say how to keep the names), ``"formula"`` for the model
    matrix of a formula.
    """
    weight_total = n if weight_total is None else weight_total
    p = cp.shape[0] - 1
    if n <= p:
        raise ValueError(
            f"X has {n} rows for {p} fixed-effect columns (intercept included); "
            "at least one more row than columns is needed"
        )
    names = fixed_names[1:] if fit_intercept else fixed_names
    if fit_intercept and p > 1:
        # A constant column is all zeros once centred, up to the rounding of its values
        # and of its mean (a few eps relative): far below (1e-12)^2 of its uncentred
        # square. A column 1e10 + N(0, 1) varies well above that and is kept.
        centred_ss = np.diag(cp)[1:p]
        constant = centred_ss <= 1e-24 * weight_total * col_means**2
        if constant.any():
            raise ValueError(
                _collinear_message(
                    [names[j] for j in np.flatnonzero(constant)],
                    fixed_names,
                    names_given,
                    one_hot=False,
                )
                + " (A column that varies only in its last digits, relative to its size, "
                "is constant to float64: centre or rescale it.)"
            )
    dropped, sums = collinear_columns(cp[:p, :p], fixed_names)
    if dropped:
        raise ValueError(_collinear_message(dropped, fixed_names, names_given, one_hot=sums))
    ols_r2 = cp[p, p] - cp[p, :p] @ np.linalg.solve(cp[:p, :p], cp[:p, p])
    if ols_r2 <= 1e-12 * max(cp[p, p], np.finfo(float).tiny):
        raise ValueError(
            "y is fitted exactly by the fixed effects (for example a constant y): "
            "there is no residual variance to estimate"
        )
