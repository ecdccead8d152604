"""The coordinator's REST and WebSocket API (FastAPI).

`create_app(ctx)` builds the application over an `ApiContext`; routes are thin and call
the service layer. Errors become problem responses in `problems`, the one mapping.
"""

from dtf_coordinator.api.app import create_app
from dtf_coordinator.api.context import ApiContext, ResultsReader

__all__ = ["ApiContext", "ResultsReader", "create_app"]
