"""Where the language-neutral `protocol/` directory lives.

In a source checkout it sits next to the package; in a wheel it is bundled as
`coordinator/_protocol` (see pyproject's force-include).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def protocol_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "_protocol", here.parent / "protocol"):
        if (candidate / "SPEC.md").is_file():
            return candidate
    raise FileNotFoundError("cannot find the protocol/ directory (schemas and model specs)")
