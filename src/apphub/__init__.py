"""apphub: jobs, DAG workflows and data assets, kept fresh by events.

`apphub.job` and `apphub.workflow` (the Python SDK) load on first use, so job processes
that only need `apphub.runtime` stay quick to start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers see the real signatures; runtime imports stay lazy
    from apphub.sdk import job, workflow

__version__ = "0.1.0"
__all__ = ["job", "workflow"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from apphub import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'apphub' has no attribute {name!r}")
