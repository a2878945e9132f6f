"""Fixtures of the interoperability tests (built in :mod:`runs`)."""

from .runs import real_run, synthetic_run  # noqa: F401
