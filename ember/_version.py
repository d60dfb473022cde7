"""The one place that states ember's version: the wheel, ``ember.__version__`` and
``ember --version`` all read it from here."""

__version__ = "0.2.0"
