"""``Preprocessor``: Ray 2.5's fit-then-transform step over datasets and batches."""

from __future__ import annotations

import enum
import warnings
from typing import Any

from ember.data import _block

BATCH_FORMATS = ("pandas", "numpy", "pyarrow")


class FitStatus(str, enum.Enum):
    """Whether a preprocessor needs, and has had, a ``fit``."""

    NOT_FITTABLE = "NOT_FITTABLE"
    NOT_FITTED = "NOT_FITTED"
    PARTIALLY_FITTED = "PARTIALLY_FITTED"  # a Chain with some of its steps fitted
    FITTED = "FITTED"


_Status = FitStatus  # for annotations inside Preprocessor, where FitStatus is its attribute

class Preprocessor:
    """A transformation of datasets that may first learn state from one (Ray 2.5's
    ``ray.data.preprocessor.Preprocessor``).

    A subclass sets ``_is_fittable = False`` when it has no state, or implements
    ``_fit(dataset)`` that stores what it learns in attributes whose names end in ``_``
    (``self.mean_ = ...``: that is how ``fit_status()`` knows it was fit). It transforms by
    implementing one or more of ``_transform_pandas(df)``, ``_transform_numpy(batch)``
    (``dict[str, np.ndarray]``) and ``_transform_arrow(table)``; ``preferred_batch_format()``
    picks among them.

    - ``fit(ds)``, ``fit_transform(ds)``, ``transform(ds)``: on an ``ember.data.Dataset``
      (lazy: ``transform`` adds a ``map_batches`` step).
    - ``transform_batch(batch)``: one batch (a dict of arrays, a DataFrame or a Table),
      returned in the format the preprocessor transforms in.

    Trainers take one as ``preprocessor=``: fit on the ``"train"`` dataset, applied to every
    dataset before it is split among the workers, and saved with each checkpoint
    (``checkpoint.get_preprocessor()``).
    """

    FitStatus = FitStatus
    _is_fittable = True

    def fit_status(self) -> _Status:
        """``NOT_FITTABLE``, ``NOT_FITTED`` or ``FITTED``."""
        if not self._is_fittable:
            return FitStatus.NOT_FITTABLE
        if any(name.endswith("_") and not name.startswith("_") for name in vars(self)):
            return FitStatus.FITTED
        return FitStatus.NOT_FITTED

    def fit(self, ds: Any) -> Preprocessor:
        """Learn this preprocessor's state from ``ds``; returns ``self``. A stateless one
        (``NOT_FITTABLE``) returns at once."""
        status = self.fit_status()
        if status == FitStatus.NOT_FITTABLE:
            return self
        if status in (FitStatus.FITTED, FitStatus.PARTIALLY_FITTED):
            warnings.warn(f"{self!r} was already fit; fitting it again replaces its state",
                          UserWarning, stacklevel=2)
        return self._fit(ds)

    def fit_transform(self, ds: Any) -> Any:
        """``fit(ds)``, then ``transform(ds)``."""
        self.fit(ds)
        return self.transform(ds)

    def transform(self, ds: Any) -> Any:
        """``ds`` with this preprocessor applied to every batch (lazily, as a ``map_batches``
        step). Raises ``RuntimeError`` (Ray: ``PreprocessorNotFittedException``, a
        ``RuntimeError``) if it must be fit first."""
        self._check_fitted("transform")
        if not hasattr(ds, "map_batches"):
            raise TypeError(f"{type(self).__name__}.transform() takes a dataset "
                            f"(ember.data.Dataset), got {type(ds).__name__}; for one batch use "
                            "transform_batch()")
        return self._transform(ds)

    def transform_batch(self, data: Any) -> Any:
        """One batch transformed: ``data`` (a dict of arrays, a pandas DataFrame or a pyarrow
        Table) is converted to the format this preprocessor works in, and returned in it."""
        self._check_fitted("transform_batch")
        return self._transform_batch(data)

    @classmethod
    def preferred_batch_format(cls) -> str:
        """The format used when several ``_transform_*`` methods are implemented."""
        return "pandas"

    # -- for subclasses ---------------------------------------------------------------------
    def _fit(self, ds: Any) -> Preprocessor:
        raise NotImplementedError(f"{type(self).__name__} is fittable but does not implement "
                                  "_fit(dataset); implement it, or set _is_fittable = False")

    def _transform(self, ds: Any) -> Any:
        batch_format = self._determine_transform_to_use()
        return ds.map_batches(self._transform_in(batch_format), batch_format=batch_format,
                              **self._get_transform_config())

    def _transform_batch(self, data: Any) -> Any:
        batch_format = self._determine_transform_to_use()
        block = _block.batch_to_block(data, what=f"{type(self).__name__}.transform_batch's "
                                                 "input")
        return self._transform_in(batch_format)(
            _block.block_to_batch(block, _block.check_batch_format(batch_format)))

    def _transform_in(self, batch_format: str) -> Any:
        return {"pandas": self._transform_pandas, "numpy": self._transform_numpy,
                "pyarrow": self._transform_arrow}[batch_format]

    def _determine_transform_to_use(self) -> str:
        cls = type(self)
        implemented = [fmt for fmt, name in (("pandas", "_transform_pandas"),
                                             ("numpy", "_transform_numpy"),
                                             ("pyarrow", "_transform_arrow"))
                       if getattr(cls, name) is not getattr(Preprocessor, name)]
        if not implemented:
            raise NotImplementedError(
                f"{cls.__name__} implements none of _transform_pandas, _transform_numpy and "
                "_transform_arrow; implement the one for the batch format it works in")
        preferred = self.preferred_batch_format()
        return preferred if preferred in implemented else implemented[0]

    def _get_transform_config(self) -> dict[str, Any]:
        """Extra ``map_batches`` arguments of ``transform`` (``batch_size``...)."""
        return {}

    def _transform_pandas(self, df: Any) -> Any:
        raise NotImplementedError

    def _transform_numpy(self, batch: Any) -> Any:
        raise NotImplementedError

    def _transform_arrow(self, table: Any) -> Any:
        raise NotImplementedError

    def _check_fitted(self, what: str) -> None:
        if self.fit_status() in (FitStatus.NOT_FITTED, FitStatus.PARTIALLY_FITTED):
            raise RuntimeError(
                f"{self!r} must be fit before {what}(): call fit(dataset) first, or "
                "fit_transform(dataset) for both")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
