"""The one error hierarchy of the gateway.

Every error a client can see is an ``OpenClawError``; each class carries its HTTP status, its
OpenAI ``type``/``code`` and the WebSocket close code used when it ends a connection, so one
mapper (``gateway.wire``) turns any of them into a JSON body, a stream's error event, a WebSocket
error frame or close.  Endpoints and methods raise; they never build error responses.

    OpenClawError                      500 server_error
    ├── InvalidRequestError            400 invalid_request_error
    │   ├── ContextTooLongError        400 code=context_length_exceeded
    │   └── UnsupportedError           400 code=unsupported
    ├── AuthenticationError            401 code=invalid_api_key
    ├── NotFoundError                  404
    │   └── ModelNotFoundError         404 code=model_not_found
    ├── MethodNotAllowedError          405
    ├── RequestTimeoutError            408
    ├── PayloadTooLargeError           413
    ├── RateLimitError                 429 (+ Retry-After)
    ├── GatewayBusyError               503 (+ Retry-After)
    ├── StoreUnavailableError          503 (+ Retry-After) the session store cannot be written
    └── UpstreamError                  502 (a model provider failed)
        ├── UpstreamBadRequestError    400 (the provider rejected the request)
        ├── UpstreamAuthError          502 (our credentials for the provider are wrong)
        ├── UpstreamRateLimitError     429 (+ Retry-After)
        ├── UpstreamUnavailableError   502
        └── UpstreamTimeoutError       504

``ConfigError`` is not a wire error: it stops start-up or a CLI command with a readable message.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ConfigError(Exception):
    """The configuration is unusable; the message names the exact path and what was expected."""


class OpenClawError(Exception):
    """Base of every error that reaches a client."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None
    retryable: ClassVar[bool] = False
    # When the error ends a WebSocket connection (its handshake): 1008 policy violation.
    ws_close_code: ClassVar[int] = 1008

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}

    @property
    def http_status(self) -> int:
        """The HTTP status of a response carrying this error."""
        return self.status_code

    def ws_close(self) -> tuple[int, str]:
        """(close code, reason) when this error ends a WebSocket connection."""
        return self.ws_close_code, self.message[:120]

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error object: ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(OpenClawError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextTooLongError(InvalidRequestError):
    default_code = "context_length_exceeded"


class UnsupportedError(InvalidRequestError):
    default_code = "unsupported"


class AuthenticationError(OpenClawError):
    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"

    def ws_close(self) -> tuple[int, str]:
        return self.ws_close_code, "unauthorized: bad or missing gateway secret"

    def __init__(self, message: str = "Unauthorized", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class PermissionDeniedError(OpenClawError):
    status_code = 403
    error_type = "invalid_request_error"
    default_code = "forbidden"


class NotFoundError(OpenClawError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"


class MethodNotAllowedError(OpenClawError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class RequestTimeoutError(OpenClawError):
    status_code = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class ConflictError(OpenClawError):
    """The target is in a state that does not allow the request (e.g. a session with a run in
    progress cannot be deleted)."""

    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLargeError(OpenClawError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class _RetryAfterMixin:
    """Adds a ``Retry-After`` header (whole seconds, at least 1) when a delay is known."""

    @staticmethod
    def _retry_headers(retry_after: float | None) -> dict[str, str]:
        if retry_after is None:
            return {}
        return {"Retry-After": str(max(1, int(retry_after + 0.999)))}


class RateLimitError(OpenClawError, _RetryAfterMixin):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"
    ws_close_code = 1013  # try again later

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        kw.setdefault("headers", self._retry_headers(retry_after))
        super().__init__(message, **kw)
        self.retry_after = retry_after

    def ws_close(self) -> tuple[int, str]:
        return self.ws_close_code, "too many failed authentication attempts"


class GatewayBusyError(OpenClawError):
    status_code = 503
    error_type = "server_error"
    default_code = "gateway_busy"
    retryable = True

    def __init__(self, message: str, **kw: Any) -> None:
        # Clients (the OpenAI SDKs among them) back off by Retry-After before trying again.
        kw.setdefault("headers", {"Retry-After": "1"})
        super().__init__(message, **kw)


class StoreUnavailableError(OpenClawError):
    """The session store failed (disk full, read-only, locked past the busy timeout).  A run
    whose turn cannot be committed fails with this instead of answering as if it were stored."""

    status_code = 503
    error_type = "server_error"
    default_code = "store_unavailable"
    retryable = True

    def __init__(
        self, message: str = "The session store is unavailable; try again shortly.", **kw: Any
    ) -> None:
        kw.setdefault("headers", {"Retry-After": "1"})
        super().__init__(message, **kw)


class UpstreamError(OpenClawError):
    """A model provider failed; the provider's own message is kept in ``message``."""

    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_error"
    retryable = False


class UpstreamBadRequestError(UpstreamError):
    status_code = 400
    error_type = "invalid_request_error"
    default_code = "upstream_bad_request"


class UpstreamAuthError(UpstreamError):
    default_code = "upstream_auth_failed"


class UpstreamRateLimitError(UpstreamError, _RetryAfterMixin):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "upstream_rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        kw.setdefault("headers", self._retry_headers(retry_after))
        super().__init__(message, **kw)
        self.retry_after = retry_after


class UpstreamUnavailableError(UpstreamError):
    default_code = "upstream_unavailable"
    retryable = True


class UpstreamTimeoutError(UpstreamError):
    # Not retried: a read timeout already cost the client the whole timeout once.
    status_code = 504
    default_code = "upstream_timeout"


class HttpStatusError(OpenClawError):
    """An HTTP error of the framework's (routing) with no class of its own: its status kept."""

    def __init__(self, message: str, status: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self._status = status

    @property
    def http_status(self) -> int:
        return self._status

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["error"]["type"] = "invalid_request_error" if self._status < 500 else "server_error"
        return body


class InternalError(OpenClawError):
    """Something the gateway did not expect; the message is generic, details go to the log."""

    def __init__(self, message: str = "The server had an error processing your request.") -> None:
        super().__init__(message)
