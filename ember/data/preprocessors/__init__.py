"""``ember.data.preprocessors``: Ray 2.5's preprocessors (``ray.data.preprocessors``).

- ``Preprocessor``: the base class: ``fit(ds)``, ``transform(ds)``, ``fit_transform(ds)``,
  ``transform_batch(batch)``, ``fit_status()``.
- ``BatchMapper(fn, batch_format="pandas" | "numpy" | "pyarrow", batch_size=...)``: a stateless
  function over batches.
- ``Chain(*preprocessors)``: several in turn.

Trainers take one as ``preprocessor=`` (``TorchTrainer``, ``TransformersTrainer``,
``AccelerateTrainer``, ``LightningTrainer``): it is fit on the ``"train"`` dataset, applied to
every dataset before they are split among the workers, and saved with every checkpoint
(``result.checkpoint.get_preprocessor()``). Ray deprecated ``BatchMapper`` in 2.7 in favour of
``Dataset.map_batches``, which is what it runs.
"""

from __future__ import annotations

from ember.data.preprocessors._base import FitStatus, Preprocessor
from ember.data.preprocessors._batch_mapper import BatchMapper, Chain

__all__ = ["BatchMapper", "Chain", "FitStatus", "Preprocessor"]
