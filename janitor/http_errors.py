"""Error models: what a provider's error response says, per provider family (DESIGN 6 "Errors").

The shared client (:class:`janitor.http.TargetHttp`) reads every response through its target's
model and acts on three kinds: ``THROTTLED`` (retried, reads and writes alike: a throttled
request was not processed), ``AUTH`` (:class:`~janitor.errors.AuthFailed`, never retried) and
``SERVER`` (reads retried, writes :class:`~janitor.errors.OutcomeUnknown`). Every other error
comes back to the provider, which maps ``http.error_info(response).kind`` to an outcome:
``NOT_NOW`` → ``skipped_changed`` (decided again next sweep), ``NOT_FOUND`` → already absent
(OCI's ``NotAuthorizedOrNotFound`` is ambiguous: confirm with a GET), ``INVALID_STATE`` → re-read
the record, ``OTHER`` → the provider's own rule.

How a model classifies a response, in this order (the first rule that applies wins):

1. Below 400 is not an error: ``kind`` is None.
2. 401 and 403 are ``AUTH``; 429 is ``THROTTLED`` (in every model, whatever the body says).
3. A throttling code of the model is ``THROTTLED`` in any status (Glue throttles with a 400).
4. 5xx is ``SERVER`` (a 5xx is never "not found" or "not now", whatever its code says).
5. A code the model knows gives its kind (Glue's 400 ``AccessDeniedException`` is ``AUTH``).
6. The status: 404 and 410 ``NOT_FOUND``; 409 and 412 ``NOT_NOW``; 408 ``SERVER`` (DESIGN 6: a
   408 is treated like a 5xx); any other 4xx ``OTHER``.

Huawei is read by status only (its documented 404 reuses the 400 ``error_code``), except for the
gateway's throttling code ``APIG.0308``. Glue's ``OperationTimeoutException`` (a 400) is
``SERVER``: the operation may or may not have happened, so a write is an unknown outcome.

What a model reads is safe to log and to write into audit rows: the message is the first
paragraph of what the provider said (AWS signature errors append the canonical request after a
blank line), with credential-looking ``key=value`` pairs and bearer tokens redacted, control
characters removed and the length bounded. Bodies over :data:`MAX_BODY` are not parsed.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx

MESSAGE_LIMIT = 300
CODE_LIMIT = 100
MAX_BODY = 1 << 20  # an error body larger than this is not parsed (no code, no message)


class ErrorKind(enum.StrEnum):
    """What an error response means to janitor (also the ``kind`` label of the errors metric)."""

    THROTTLED = "throttled"  # slow down; the request was not processed
    AUTH = "auth"  # credentials missing, expired or not allowed
    NOT_NOW = "not_now"  # a conflicting change or lock: decide again next sweep
    NOT_FOUND = "not_found"  # the record is not there (or, for OCI, not visible to us)
    INVALID_STATE = "invalid_state"  # the record's state does not allow the call
    SERVER = "server"  # the provider failed (5xx, 408, an operation timeout)
    OTHER = "other"  # an error the model has no finer kind for (bad request, ...)


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    """What a provider's error response said; safe to log and audit (no secrets, bounded).

    Attributes:
        status: the HTTP status.
        kind: what it means; None when the status is not an error (below 400).
        code: the provider's error code (``ThrottlingException``, ``IncorrectState``,
            ``APIG.0308``, ``ESS-00500``), when it sent one.
        message: the provider's message (at most :data:`MESSAGE_LIMIT` characters), with
            Huawei's ``solution_msg`` appended when present; empty when it said nothing usable.
    """

    status: int
    kind: ErrorKind | None
    code: str | None = None
    message: str = ""

    def __str__(self) -> str:
        """``400 ThrottlingException: Rate exceeded``: what goes into audit rows' error column."""
        head = f"{self.status} {self.code}" if self.code else str(self.status)
        return f"{head}: {self.message}" if self.message else head


class ErrorModel(Protocol):
    """Reads a provider family's error responses."""

    @property
    def name(self) -> str:
        """The model's name (``aws_json``), for logs and tests."""
        ...

    def read(self, response: httpx.Response) -> ErrorInfo:
        """What the response says; never raises, whatever the body (HTML, empty, junk)."""
        ...


#: What a model takes from a parsed body: ``(code, message)``. ``body`` is whatever the JSON
#: held (any type), or None when the body was empty, not JSON or too large.
_Said = Callable[[Any, Mapping[str, str]], tuple[object, object]]


@dataclass(frozen=True, slots=True)
class _Model:
    name: str
    said: _Said
    throttling: frozenset[str] = frozenset()
    codes: Mapping[str, ErrorKind] = field(default_factory=dict)

    def read(self, response: httpx.Response) -> ErrorInfo:
        status = response.status_code
        if status < 400:
            return ErrorInfo(status=status, kind=None)
        raw_code, raw_message = self.said(_body(response), response.headers)
        code = _clean(raw_code, CODE_LIMIT) or None
        return ErrorInfo(
            status=status,
            kind=self._kind(status, code),
            code=code,
            message=_clean(raw_message, MESSAGE_LIMIT, redact=True),
        )

    def _kind(self, status: int, code: str | None) -> ErrorKind:
        if status in (401, 403):
            return ErrorKind.AUTH
        if status == 429 or code in self.throttling:
            return ErrorKind.THROTTLED
        if status >= 500:
            return ErrorKind.SERVER
        if code is not None and code in self.codes:
            return self.codes[code]
        return _STATUS_KINDS.get(status, ErrorKind.OTHER)


_STATUS_KINDS = {
    404: ErrorKind.NOT_FOUND,
    410: ErrorKind.NOT_FOUND,
    409: ErrorKind.NOT_NOW,
    412: ErrorKind.NOT_NOW,
    408: ErrorKind.SERVER,
}


def _body(response: httpx.Response) -> Any:
    content = response.content
    if not content or len(content) > MAX_BODY:
        return None
    try:
        return json.loads(content)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _field(body: Any, *names: str) -> object:
    """The first of ``names`` that ``body`` (a JSON object) has with a non-empty value."""
    if not isinstance(body, dict):
        return None
    for name in names:
        value = body.get(name)
        if value not in (None, ""):
            return value
    return None


def _said_status(body: Any, headers: Mapping[str, str]) -> tuple[object, object]:
    # Jupyter's errors are {"message", "reason"}; the kind comes from the status alone.
    return None, _field(body, "message")


def _said_aws(body: Any, headers: Mapping[str, str]) -> tuple[object, object]:
    # The JSON protocols: {"__type": "com.amazonaws.glue#ThrottlingException", "message": ...};
    # REST-JSON services send the type in x-amzn-ErrorType ("Code:http://internal...").
    code = _field(body, "__type", "code", "Code") or headers.get("x-amzn-errortype")
    if isinstance(code, str):
        code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    return code, _field(body, "message", "Message")


def _said_oci(body: Any, headers: Mapping[str, str]) -> tuple[object, object]:
    return _field(body, "code"), _field(body, "message")


def _said_huawei(body: Any, headers: Mapping[str, str]) -> tuple[object, object]:
    # {error_code, error_msg, solution_msg}, or the gateway's {error: {code, message, title}}
    # (its 403 sends both, with an integer error_code).
    gateway = _field(body, "error")
    code = _field(body, "error_code") or _field(gateway, "code")
    message = _field(body, "error_msg") or _field(gateway, "message")
    solution = _field(body, "solution_msg")
    if isinstance(solution, str):
        message = f"{message} (solution: {solution})" if isinstance(message, str) else solution
    return code, message


def _said_problem(body: Any, headers: Mapping[str, str]) -> tuple[object, object]:
    # RFC 7807 as ESS sends it: {type, title, status, detail, errorCode}.
    return _field(body, "errorCode"), _field(body, "detail", "title")


_PARAGRAPH = re.compile(r"\r?\n[ \t]*\r?\n")
_SECRET = re.compile(
    r"(?i)\b((?:x-amz-security-)?token|signature|password|secret|credential|authorization"
    r"|access[_-]?key|api[_-]?key|x-auth-token|x-security-token)"
    r"(\s*[=:]\s*)(?:(?:bearer|basic)\s+)?[^\s,;'\"]+"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")


def _clean(value: object, limit: int, *, redact: bool = False) -> str:
    """One line of printable text, at most ``limit`` characters; "" for non-text values.

    Non-printable characters (controls, bidi overrides, lone surrogates) become spaces, so a
    message cannot break a log line or disguise itself.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    text = str(value)
    if redact:
        text = _PARAGRAPH.split(text, 1)[0]
        text = _SECRET.sub(r"\1\2<redacted>", text)
        text = _BEARER.sub(r"\1 <redacted>", text)
    text = "".join(c if c.isprintable() else " " for c in text[: limit * 4])
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_AWS_THROTTLING = frozenset(
    {
        # botocore's standard retry mode's throttling codes, without the two that are not
        # about the request rate (TransactionInProgressException, LimitExceededException)
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "EC2ThrottledException",
    }
)
_AWS_CODES = {
    **dict.fromkeys(
        (
            "AccessDeniedException",
            "AccessDenied",
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "ExpiredTokenException",
            "ExpiredToken",
            "InvalidSignatureException",
            "SignatureDoesNotMatch",
            "IncompleteSignature",
            "MissingAuthenticationToken",
            "MissingAuthenticationTokenException",
            "RequestExpired",
        ),
        ErrorKind.AUTH,
    ),
    "ConcurrentModificationException": ErrorKind.NOT_NOW,
    "EntityNotFoundException": ErrorKind.NOT_FOUND,
    "ResourceNotFoundException": ErrorKind.NOT_FOUND,
    "IllegalSessionStateException": ErrorKind.INVALID_STATE,
    "InternalServiceException": ErrorKind.SERVER,
    "OperationTimeoutException": ErrorKind.SERVER,
}

#: Status only (Jupyter): today's behaviour, plus the message of a ``{"message": ...}`` body.
STATUS: ErrorModel = _Model("status", _said_status)
#: AWS JSON protocols (Glue): the code in ``__type`` or ``x-amzn-ErrorType``.
AWS_JSON: ErrorModel = _Model("aws_json", _said_aws, _AWS_THROTTLING, _AWS_CODES)
#: OCI (AIDP): ``{code, message}``.
OCI: ErrorModel = _Model(
    "oci",
    _said_oci,
    frozenset({"TooManyRequests"}),
    {
        "NotAuthenticated": ErrorKind.AUTH,
        "IncorrectState": ErrorKind.NOT_NOW,
        "LockConflict": ErrorKind.NOT_NOW,
        "NotAuthorizedOrNotFound": ErrorKind.NOT_FOUND,
    },
)
#: Huawei Cloud (DataArts Fabric): by status, except the gateway's throttling code.
HUAWEI: ErrorModel = _Model("huawei", _said_huawei, frozenset({"APIG.0308"}))
#: Problem JSON (ESS): ``{type, title, status, detail, errorCode}``; by status.
PROBLEM_JSON: ErrorModel = _Model("problem_json", _said_problem)

#: Every model by name.
MODELS: Mapping[str, ErrorModel] = {
    model.name: model for model in (STATUS, AWS_JSON, OCI, HUAWEI, PROBLEM_JSON)
}
