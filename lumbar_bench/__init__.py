"""lumbar-bench: a staged benchmark harness for RSNA 2024 lumbar spine degeneration grading."""

__version__ = "0.1.0"
