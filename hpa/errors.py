"""Exceptions shared by every stage (kept free of heavy imports)."""


class HPADataError(ValueError):
    """An input file is missing, unreadable or not what HPA data looks like."""
