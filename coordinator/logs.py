"""Logging for the CLI: rich for people, or one JSON object per line for log shippers."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from rich.console import Console
from rich.logging import RichHandler


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: int, console: Console, *, json_lines: bool = False) -> None:
    if json_lines:
        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
    else:
        handler = RichHandler(console=console, show_path=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    for noisy in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    flower = logging.getLogger("flwr")
    flower.setLevel(max(level, logging.WARNING))
    flower.propagate = False  # Flower prints through its own handler; don't print everything twice


_TOKEN_QUERY = re.compile(r"\?[^\s\"]*token[^\s\"]*", re.IGNORECASE)


class RedactTokens(logging.Filter):
    """Masks query strings that mention a token in log records (uvicorn's access log: `/?token=...`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_tokens(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_tokens(record.msg)
        return True


def redact_tokens(text: str) -> str:
    """`text` with every query string that mentions a token replaced by `?[redacted]`."""
    return _TOKEN_QUERY.sub("?[redacted]", text)
