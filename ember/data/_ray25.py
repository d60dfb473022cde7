"""Ray 2.5's ``Dataset`` names that ember keeps for programs written then: ``fully_executed``,
``is_fully_executed``, ``lazy``, ``default_batch_format``, ``dataset_format`` and the
``DatasetPipeline`` makers ``window`` and ``repeat``. ``Ray25Names`` holds them; ``Dataset``
inherits them."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from ember.data import _pipeline
from ember.data._pipeline import DatasetPipeline
from ember.data._plan import InputBlocks, Node

if TYPE_CHECKING:
    from ember.data._dataset import Dataset, MaterializedDataset


class Ray25Names:
    """Ray 2.5's names of ``Dataset`` methods (see the module's docstring)."""

    _plan: Node

    def materialize(self) -> MaterializedDataset:
        raise NotImplementedError

    def fully_executed(self) -> MaterializedDataset:
        """Ray 2.5's name for ``materialize``."""
        return self.materialize()

    def is_fully_executed(self) -> bool:
        """Whether every block is already in the object store (``materialize``, ``from_*``),
        so consuming the dataset runs nothing (Ray 2.5)."""
        return isinstance(self._plan, InputBlocks)

    def lazy(self) -> Dataset:
        """This dataset: ember's datasets are always lazy (Ray 2.5's switch to lazy mode)."""
        return cast("Dataset", self)

    def default_batch_format(self) -> type:
        """The type of a batch when ``batch_format`` is left as it is: ``dict`` (of column
        name to ``numpy.ndarray``), as in Ray 2.5's strict mode.

        >>> ember.data.range(3).default_batch_format()
        <class 'dict'>
        """
        return dict

    def dataset_format(self) -> str:
        """The format of the blocks, as Ray 2.5 named it: always ``"arrow"`` (every block is a
        ``pyarrow.Table``)."""
        return "arrow"

    def window(self, *, blocks_per_window: int | None = None,
               bytes_per_window: int | None = None) -> DatasetPipeline:
        """A ``DatasetPipeline`` over windows of ``blocks_per_window`` blocks (default 10) or
        of up to ``bytes_per_window`` bytes (Ray 2.5). A window of a dataset that starts with
        a read reads only its own share; a plan with a barrier (sort, shuffle...) or a limit
        is run first. Transformations of the pipeline run per window, as it is consumed.

        >>> pipe = ember.data.range(8, parallelism=4).window(blocks_per_window=2)
        >>> [w.count() for w in pipe.iter_datasets()]
        [4, 4]
        """
        return _pipeline.window(cast("Dataset", self), blocks_per_window, bytes_per_window)

    def repeat(self, times: int | None = None) -> DatasetPipeline:
        """A ``DatasetPipeline`` that goes over this dataset ``times`` times (``None``:
        without end), each time an epoch (Ray 2.5). Each epoch runs the plan again;
        ``materialize()`` first to compute it once and reuse its blocks.

        >>> ember.data.range(3).repeat(2).take_all()
        [{'id': 0}, {'id': 1}, {'id': 2}, {'id': 0}, {'id': 1}, {'id': 2}]
        """
        return _pipeline.repeat(cast("Dataset", self), times)
