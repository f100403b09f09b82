"""Exceptions with one-line messages that name the file or key and the problem."""

from __future__ import annotations


class LumbarBenchError(Exception):
    """Base class of every error the harness raises on purpose."""


class DataError(LumbarBenchError):
    """Bad input data: a file that is missing, unreadable or inconsistent."""


class ConfigError(LumbarBenchError):
    """A config key, override or name that does not exist or does not fit."""


class SubmissionError(LumbarBenchError):
    """A submission that the official score refuses (missing row, bad value)."""


class SplitError(LumbarBenchError):
    """A split file that is malformed, tampered with or does not fit the data."""
