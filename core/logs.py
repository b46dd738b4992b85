"""Logging configured once for every command and server.

Log records never carry patient data: callers log identifiers we generate (request ids, key ids,
content hashes), never message text, data URLs, pixel data or DICOM identifiers.
"""

from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_configured = False


def configure_logging(level: str | None = None, *, force: bool = False) -> None:
    """Set up the root logger once: level from ``level``, else ``INFIMED_LOG_LEVEL``, else INFO."""
    global _configured
    if _configured and not force:
        return
    name = (level or os.environ.get("INFIMED_LOG_LEVEL") or "INFO").upper()
    numeric = logging.getLevelName(name)
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r} (use DEBUG, INFO, WARNING, ERROR)")
    logging.basicConfig(level=numeric, format=_FORMAT, stream=sys.stderr, force=True)
    # Third-party loggers that would echo request URLs or bodies at INFO.
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "openai", "urllib3", "multipart"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    _configured = True
