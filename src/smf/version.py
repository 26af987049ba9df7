"""smf's version, in a module of its own: every package may read it (a saved model records it) without
importing the public API that the root package `smf` serves."""

__version__ = "0.1.0"
