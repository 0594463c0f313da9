"""rustworkers Python shim: uhttp-workers compatible worker API over the rustworkers
pipe protocol. `import rustworkers as _workers` replaces `import uhttp.workers as _workers`.
"""

from .api import (
    DEFERRED, LOG_CRITICAL, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_LEVEL_NAMES, LOG_WARNING,
    ApiException, ApiHandler, Logger, RejectRequest, Request, Response, WebSocket, Worker,
    _match_pattern, _parse_param, api, websocket,
)

__version__ = "0.1.0"

__all__ = [
    "DEFERRED", "LOG_CRITICAL", "LOG_DEBUG", "LOG_ERROR", "LOG_INFO", "LOG_LEVEL_NAMES",
    "LOG_WARNING", "ApiException", "ApiHandler", "Logger", "RejectRequest", "Request",
    "Response", "WebSocket", "Worker", "api", "websocket",
]
