"""nnU-Net's ``print`` output, sent to ``logging``."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class LogStream:
    """A file-like sink that forwards nnU-Net's ``print`` output to ``logging`` at debug level."""

    def write(self, text: str) -> int:
        """Log each non-empty line."""
        for line in text.splitlines():
            if line.strip():
                log.debug("nnunet: %s", line)
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""
