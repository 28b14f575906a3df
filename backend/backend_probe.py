"""Former home of the backend probe, kept so that its importers keep working.

`server_root` now lives in `backend.llama_api`, `BackendInfo` and the context
limits in `backend.backend_info`, and `probe_backend` beside the monitor's
other llama-server calls in `backend.monitor.llama` (that split ended the
import circle between this module and the monitor). New code imports from
those modules.
"""

from __future__ import annotations

from backend.backend_info import COMFORTABLE_CONTEXT, MIN_CONTEXT, BackendInfo, output_cap
from backend.llama_api import server_root

__all__ = ["COMFORTABLE_CONTEXT", "MIN_CONTEXT", "BackendInfo", "output_cap", "server_root"]
