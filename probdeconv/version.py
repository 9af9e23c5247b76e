"""The package version (one definition; ``probdeconv.__version__`` re-exports it)."""

__version__ = "0.1.0"
