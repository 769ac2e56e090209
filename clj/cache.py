"""Where clj keeps its caches on the user's machine."""
from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/clj/<parts>`` (default ``~/.cache/clj/<parts>``); not created."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "clj", *parts)
