"""The device a run asks for (``--device``), resolved against what torch sees."""

from __future__ import annotations

from lumbar_bench.core.errors import ConfigError

#: The choices of ``--device``.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device not in DEVICES:
        raise ConfigError(f"--device {device!r}: choose {', '.join(DEVICES[:-1])} or {DEVICES[-1]}")
    if device == "cpu":
        return device
    try:
        import torch  # lazy: a CPU run, `list` and `--help` never import torch for this

        available = torch.cuda.is_available()
    except ImportError:
        available = False
    if device == "cuda" and not available:
        raise ConfigError("--device cuda: torch sees no CUDA device")
    return "cuda" if available else "cpu"
