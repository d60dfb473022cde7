"""``BatchMapper`` (a stateless function over batches) and ``Chain`` (preprocessors in turn)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ember.data.preprocessors._base import BATCH_FORMATS, FitStatus, Preprocessor


class BatchMapper(Preprocessor):
    """Apply ``fn`` to every batch: Ray 2.5's ``BatchMapper``, stateless (no ``fit`` needed).

    ``batch_format`` is the format ``fn`` takes and returns: ``"pandas"`` (a DataFrame; the
    default, as in Ray before 2.4), ``"numpy"`` (``dict[str, np.ndarray]``) or ``"pyarrow"``
    (a Table). ``batch_size`` is ``map_batches``' (``"default"``: ember's 1024 rows;
    ``None``: whole blocks)::

        def add_one(df):
            df["x"] = df["x"] + 1
            return df

        ds = BatchMapper(add_one, batch_format="pandas").transform(ember.data.range(8))
    """

    _is_fittable = False

    def __init__(self, fn: Callable[[Any], Any], batch_format: str | None = None,
                 batch_size: int | str | None = "default") -> None:
        if not callable(fn):
            raise TypeError(f"BatchMapper(fn=...) takes a function of one batch, got "
                            f"{type(fn).__name__}")
        batch_format = "pandas" if batch_format is None else batch_format
        if batch_format not in BATCH_FORMATS:
            raise ValueError(f"BatchMapper(batch_format={batch_format!r}) must be one of "
                             f"{', '.join(map(repr, BATCH_FORMATS))}")
        if batch_size not in ("default", None) and (isinstance(batch_size, bool) or not
                                                    isinstance(batch_size, int)
                                                    or batch_size < 1):
            raise ValueError(f"BatchMapper(batch_size={batch_size!r}) must be an int >= 1, "
                             "None (whole blocks) or 'default'")
        self.fn = fn
        self.batch_format = batch_format
        self.batch_size = batch_size

    def _transform_pandas(self, df: Any) -> Any:
        return self.fn(df)

    def _transform_numpy(self, batch: Any) -> Any:
        return self.fn(batch)

    def _transform_arrow(self, table: Any) -> Any:
        return self.fn(table)

    def _determine_transform_to_use(self) -> str:
        return self.batch_format

    def _get_transform_config(self) -> dict[str, Any]:
        return {} if self.batch_size == "default" else {"batch_size": self.batch_size}

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", self.fn)
        return f"BatchMapper(fn={name}, batch_format={self.batch_format!r})"


class Chain(Preprocessor):
    """Several preprocessors applied in turn; ``fit`` fits each on what the ones before it
    produce (Ray 2.5's ``Chain``)::

        preprocessor = Chain(BatchMapper(split_text, batch_format="pandas"),
                             BatchMapper(tokenize, batch_format="pandas"))
    """

    def __init__(self, *preprocessors: Preprocessor) -> None:
        for p in preprocessors:
            if not isinstance(p, Preprocessor):
                raise TypeError(f"Chain(...) takes preprocessors, got {type(p).__name__}")
        if not preprocessors:
            raise ValueError("Chain() needs at least one preprocessor")
        self.preprocessors = tuple(preprocessors)

    def fit_status(self) -> FitStatus:
        """``FITTED`` when every fittable step is, ``PARTIALLY_FITTED`` when some are,
        ``NOT_FITTABLE`` when none needs fitting."""
        statuses = [p.fit_status() for p in self.preprocessors]
        fittable = [s for s in statuses if s != FitStatus.NOT_FITTABLE]
        if not fittable:
            return FitStatus.NOT_FITTABLE
        fitted = [s for s in fittable if s == FitStatus.FITTED]
        if len(fitted) == len(fittable):
            return FitStatus.FITTED
        return FitStatus.PARTIALLY_FITTED if fitted or any(
            s == FitStatus.PARTIALLY_FITTED for s in fittable) else FitStatus.NOT_FITTED

    def _fit(self, ds: Any) -> Preprocessor:
        for p in self.preprocessors[:-1]:
            ds = p.fit_transform(ds)
        self.preprocessors[-1].fit(ds)
        return self

    def fit_transform(self, ds: Any) -> Any:
        """Fit and apply each step in turn."""
        for p in self.preprocessors:
            ds = p.fit_transform(ds)
        return ds

    def _transform(self, ds: Any) -> Any:
        for p in self.preprocessors:
            ds = p.transform(ds)
        return ds

    def _transform_batch(self, data: Any) -> Any:
        for p in self.preprocessors:
            data = p.transform_batch(data)
        return data

    def __repr__(self) -> str:
        return f"Chain({', '.join(map(repr, self.preprocessors))})"
