"""The data context under Ray's module name (``ray.data.context``): ``DataContext``, and
``DatasetContext``, Ray 2.5's name of the same class.

>>> ember.data.context.DataContext is ember.data.DataContext
True
"""

from __future__ import annotations

from ember.data._context import DataContext, DatasetContext

__all__ = ["DataContext", "DatasetContext"]
