"""The package version, stated once: pyproject.toml reads it from here (scikit-build-core's
regex version provider) and ``compmech.__version__`` imports it."""
__version__ = "0.2.0"
