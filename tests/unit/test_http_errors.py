"""janitor.http_errors: each provider family's error responses, realistic and junk.

The bodies are the providers' own (provider-apis.md and the API reference pages in
reference/seeds: the Huawei "Closing a Session" examples, the OCI and ESS error schemas, Glue
errors as moto and AWS send them). What the client does with a kind is in test_http.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from janitor.http_errors import (
    AWS_JSON,
    CODE_LIMIT,
    HUAWEI,
    MAX_BODY,
    MESSAGE_LIMIT,
    MODELS,
    OCI,
    PROBLEM_JSON,
    STATUS,
    ErrorInfo,
    ErrorKind,
    ErrorModel,
)

K = ErrorKind


def _response(
    status: int, body: Any = None, *, raw: bytes | None = None, **headers: str
) -> httpx.Response:
    if raw is not None:
        return httpx.Response(status, content=raw, headers=headers)
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def _read(model: ErrorModel, status: int, body: Any = None, **kw: Any) -> ErrorInfo:
    return model.read(_response(status, body, **kw))


# --- ErrorInfo -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "text"),
    [
        (
            ErrorInfo(
                status=400, kind=K.THROTTLED, code="ThrottlingException", message="Rate exceeded"
            ),
            "400 ThrottlingException: Rate exceeded",
        ),
        (ErrorInfo(status=409, kind=K.NOT_NOW, code="IncorrectState"), "409 IncorrectState"),
        (
            ErrorInfo(status=404, kind=K.NOT_FOUND, message="Session not found"),
            "404: Session not found",
        ),
        (ErrorInfo(status=503, kind=K.SERVER), "503"),
    ],
)
def test_an_error_info_reads_as_status_code_and_message(info: ErrorInfo, text: str) -> None:
    assert str(info) == text


@pytest.mark.parametrize("status", [200, 201, 204, 301, 304])
@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_a_response_below_400_is_no_error(model: ErrorModel, status: int) -> None:
    body = {"__type": "ThrottlingException", "code": "TooManyRequests", "error_code": "APIG.0308"}
    assert _read(model, status, body) == ErrorInfo(status=status, kind=None)


def test_every_model_is_listed_by_its_name() -> None:
    assert {name: model.name for name, model in MODELS.items()} == {
        "status": "status",
        "aws_json": "aws_json",
        "oci": "oci",
        "huawei": "huawei",
        "problem_json": "problem_json",
    }


# --- AWS JSON (Glue) -------------------------------------------------------------------------

DENIED = (
    "User: arn:aws:sts::123456789012:assumed-role/janitor/i-0abc is not authorized to perform: "
    "glue:DeleteSession on resource: arn:aws:glue:eu-west-1:123456789012:session/s-1 because no "
    "identity-based policy allows the glue:DeleteSession action"
)


@pytest.mark.parametrize(
    ("status", "type_", "kind"),
    [
        (400, "ThrottlingException", K.THROTTLED),  # Glue throttles with a 400
        (400, "com.amazonaws.glue#ThrottlingException", K.THROTTLED),
        (400, "TooManyRequestsException", K.THROTTLED),
        (400, "RequestLimitExceeded", K.THROTTLED),
        (400, "ProvisionedThroughputExceededException", K.THROTTLED),
        (400, "Throttling", K.THROTTLED),
        (503, "ThrottlingException", K.THROTTLED),
        (400, "AccessDeniedException", K.AUTH),
        (400, "UnrecognizedClientException", K.AUTH),
        (400, "ExpiredTokenException", K.AUTH),
        (400, "IncompleteSignature", K.AUTH),
        (403, "InvalidSignatureException", K.AUTH),
        (403, "MissingAuthenticationToken", K.AUTH),
        (400, "ConcurrentModificationException", K.NOT_NOW),
        (400, "EntityNotFoundException", K.NOT_FOUND),
        (400, "IllegalSessionStateException", K.INVALID_STATE),
        (400, "InvalidInputException", K.OTHER),
        (400, "AlreadyExistsException", K.OTHER),
        (400, "ResourceNumberLimitExceededException", K.OTHER),
        (400, "OperationTimeoutException", K.SERVER),  # may have happened: like a 5xx
        (500, "InternalServiceException", K.SERVER),
        (500, "EntityNotFoundException", K.SERVER),  # a 5xx is never "not found"
    ],
)
def test_aws_json_codes(status: int, type_: str, kind: ErrorKind) -> None:
    info = _read(AWS_JSON, status, {"__type": type_, "message": "what AWS said"})
    code = type_.rsplit("#", 1)[-1]
    assert info == ErrorInfo(status=status, kind=kind, code=code, message="what AWS said")


@pytest.mark.parametrize(
    ("status", "body", "info"),
    [
        (
            400,
            {"__type": "AccessDeniedException", "Message": DENIED},
            ErrorInfo(status=400, kind=K.AUTH, code="AccessDeniedException", message=DENIED),
        ),
        (
            400,
            {"__type": "EntityNotFoundException", "message": "Session s-1 not found."},  # moto
            ErrorInfo(
                status=400,
                kind=K.NOT_FOUND,
                code="EntityNotFoundException",
                message="Session s-1 not found.",
            ),
        ),
        (
            403,
            {"message": "Missing Authentication Token"},  # API Gateway: no type, by status
            ErrorInfo(status=403, kind=K.AUTH, message="Missing Authentication Token"),
        ),
    ],
)
def test_aws_json_messages(status: int, body: dict[str, str], info: ErrorInfo) -> None:
    assert _read(AWS_JSON, status, body) == info


def test_aws_reads_the_error_type_header_when_the_body_has_none() -> None:
    info = AWS_JSON.read(
        _response(
            400,
            raw=b"",
            **{
                "x-amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.availability/"
            },
        )
    )
    assert info == ErrorInfo(status=400, kind=K.THROTTLED, code="ThrottlingException")


def test_aws_prefers_the_body_type_over_the_header() -> None:
    response = _response(
        400, {"__type": "EntityNotFoundException"}, **{"x-amzn-ErrorType": "ValidationException"}
    )
    assert AWS_JSON.read(response).kind is K.NOT_FOUND


def test_an_aws_signature_error_does_not_echo_the_canonical_request() -> None:
    """AWS appends the canonical request (with x-amz-security-token) after a blank line."""
    token = "IQoJb3JpZ2luX2VjEXAMPLEsecretSESSIONtoken"
    message = (
        "The request signature we calculated does not match the signature you provided. Check "
        "your AWS Secret Access Key and signing method.\n\nThe Canonical String for this request "
        "should have been\n'POST\n/\n\ncontent-type:application/x-amz-json-1.1\n"
        f"host:glue.eu-west-1.amazonaws.com\nx-amz-date:20261122T120000Z\nx-amz-security-token:{token}\n'"
    )
    info = _read(AWS_JSON, 403, {"__type": "InvalidSignatureException", "message": message})
    assert info.kind is K.AUTH
    assert token not in str(info)
    assert str(info) == (
        "403 InvalidSignatureException: The request signature we calculated does not match the "
        "signature you provided. Check your AWS Secret Access Key and signing method."
    )


@pytest.mark.parametrize(
    "message",
    [
        "bad request: token=abcdef0123456789 rejected",
        "header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig was rejected",
        "x-amz-security-token:IQoJb3JpZ2luX2VjEXAMPLE is expired",
        "password = hunter2hunter2 is wrong",
    ],
)
def test_credentials_in_a_message_are_redacted(message: str) -> None:
    info = _read(AWS_JSON, 400, {"__type": "InvalidInputException", "message": message})
    for secret in ("abcdef0123456789", "eyJhbGciOiJIUzI1NiJ9", "IQoJb3JpZ2lu", "hunter2"):
        assert secret not in info.message
    assert "<redacted>" in info.message


# --- OCI (AIDP) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (429, "TooManyRequests", K.THROTTLED),
        (401, "NotAuthenticated", K.AUTH),
        (409, "IncorrectState", K.NOT_NOW),
        (409, "LockConflict", K.NOT_NOW),
        (409, "Conflict", K.NOT_NOW),  # "Another ... is being provisioned, try again later"
        (404, "NotAuthorizedOrNotFound", K.NOT_FOUND),
        (404, "NotFound", K.NOT_FOUND),
        (412, "NoEtagMatch", K.NOT_NOW),
        (400, "InvalidParameter", K.OTHER),
        (400, "NotAuthorizedOrNotFound", K.NOT_FOUND),
        (500, "InternalServerError", K.SERVER),
        (501, "MethodNotImplemented", K.SERVER),
    ],
)
def test_oci_errors(status: int, code: str, kind: ErrorKind) -> None:
    body = {"code": code, "message": f"{code}: the service said so"}
    assert _read(OCI, status, body, **{"opc-request-id": "r-1"}) == ErrorInfo(
        status=status, kind=kind, code=code, message=f"{code}: the service said so"
    )


# --- Huawei (DataArts Fabric): the examples of "Closing a Session" ---------------------------

HUAWEI_EXAMPLES = [
    (
        400,
        {
            "error_code": "common.01000001",
            "error_msg": "failed to read http request, please check your input, code: 400, "
            "reason: Type mismatch., cause: TypeMismatchException",
        },
        K.OTHER,
        "common.01000001",
        (
            "failed to read http request, please check your input, code: 400, reason: Type "
            "mismatch., cause: TypeMismatchException"
        ),
    ),
    (
        401,
        {"error_code": "APIG.1002", "error_msg": "Incorrect token or token resolution failed"},
        K.AUTH,
        "APIG.1002",
        "Incorrect token or token resolution failed",
    ),
    (
        403,
        {
            "error": {
                "code": "403",
                "message": "X-Auth-Token is invalid in the request",
                "title": "Forbidden",
            },
            "error_code": 403,
            "error_msg": "X-Auth-Token is invalid in the request",
            "title": "Forbidden",
        },
        K.AUTH,
        "403",
        "X-Auth-Token is invalid in the request",
    ),
    (
        404,  # the same error_code as the 400: the status decides
        {"error_code": "common.01000001", "error_msg": "response status exception, code: 404"},
        K.NOT_FOUND,
        "common.01000001",
        "response status exception, code: 404",
    ),
    (
        408,
        {"error_code": "common.00000408", "error_msg": "timeout exception occurred"},
        K.SERVER,
        "common.00000408",
        "timeout exception occurred",
    ),
    (
        500,
        {"error_code": "common.00000500", "error_msg": "internal error"},
        K.SERVER,
        "common.00000500",
        "internal error",
    ),
    (
        429,
        {
            "error_code": "APIG.0308",
            "error_msg": "The throttling threshold has been reached: policy user over "
            "ratelimit,limit:10,time:1 second",
            "request_id": "5b1e0e3d9c0b4d1f",
        },
        K.THROTTLED,
        "APIG.0308",
        (
            "The throttling threshold has been reached: policy user over ratelimit,limit:10,"
            "time:1 second"
        ),
    ),
    (
        400,  # the gateway's throttling code is throttling whatever the status
        {"error_code": "APIG.0308", "error_msg": "The throttling threshold has been reached"},
        K.THROTTLED,
        "APIG.0308",
        "The throttling threshold has been reached",
    ),
    (
        403,
        {"error": {"code": "APIG.1009", "message": "AppKey or AppSecret is invalid"}},
        K.AUTH,
        "APIG.1009",
        "AppKey or AppSecret is invalid",
    ),
]


@pytest.mark.parametrize(("status", "body", "kind", "code", "message"), HUAWEI_EXAMPLES)
def test_huawei_errors_by_status(
    status: int, body: dict[str, Any], kind: ErrorKind, code: str, message: str
) -> None:
    assert _read(HUAWEI, status, body) == ErrorInfo(
        status=status, kind=kind, code=code, message=message
    )


def test_huawei_adds_the_solution_to_the_message() -> None:
    body = {
        "error_code": "DLF.0100",
        "error_msg": "The session is closed.",
        "solution_msg": "Create a new session.",
    }
    info = _read(HUAWEI, 400, body)
    assert str(info) == "400 DLF.0100: The session is closed. (solution: Create a new session.)"


def test_huawei_a_solution_without_a_message_is_the_message() -> None:
    assert _read(HUAWEI, 400, {"solution_msg": "Retry later."}).message == "Retry later."


# --- Problem JSON (ESS) -----------------------------------------------------------------------


def _problem(status: int, title: str, detail: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "http://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html",
        "title": title,
        "status": status,
        "errorCode": "ESS-00500",
    }
    if detail is not None:
        body["detail"] = detail
    return body


@pytest.mark.parametrize(
    ("status", "title", "detail", "kind"),
    [
        (400, "Bad Request", "Unsupported state for operation", K.OTHER),
        (403, "Forbidden", "Not authorized to cancel this request", K.AUTH),
        (401, "Unauthorized", None, K.AUTH),
        (404, "Not Found", "Request ID not found", K.NOT_FOUND),
        (409, "Conflict", "Another operation is in progress on request 1234", K.NOT_NOW),
        (429, "Too Many Requests", None, K.THROTTLED),
        (500, "Internal Server Error", "Scheduling sub-system error", K.SERVER),
    ],
)
def test_problem_json_errors(status: int, title: str, detail: str | None, kind: ErrorKind) -> None:
    info = _read(PROBLEM_JSON, status, _problem(status, title, detail))
    assert info == ErrorInfo(status=status, kind=kind, code="ESS-00500", message=detail or title)


def test_problem_json_uses_the_http_status_not_the_bodys() -> None:
    assert _read(PROBLEM_JSON, 409, _problem(400, "Bad Request")).kind is K.NOT_NOW


# --- STATUS (Jupyter) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, K.OTHER),
        (401, K.AUTH),
        (403, K.AUTH),
        (404, K.NOT_FOUND),
        (408, K.SERVER),
        (409, K.NOT_NOW),
        (410, K.NOT_FOUND),
        (412, K.NOT_NOW),
        (422, K.OTHER),
        (429, K.THROTTLED),
        (500, K.SERVER),
        (503, K.SERVER),
    ],
)
def test_the_status_model_looks_at_the_status_only(status: int, kind: ErrorKind) -> None:
    body = {"message": "Session not found: abc", "reason": None, "__type": "ThrottlingException"}
    assert _read(STATUS, status, body) == ErrorInfo(
        status=status, kind=kind, message="Session not found: abc"
    )


# --- junk: every model, every status, never raises ----------------------------------------------

HTML = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
JUNK = [
    pytest.param(HTML, id="html"),
    pytest.param(b"", id="empty"),
    pytest.param(b'{"__type": "Throttl', id="truncated-json"),
    pytest.param(b"\xff\xfe\x00junk", id="not-utf8"),
    pytest.param(b"[1, 2, 3]", id="array"),
    pytest.param(b'"ThrottlingException"', id="string"),
    pytest.param(b"null", id="null"),
    pytest.param(b"12", id="number"),
    pytest.param(b"[" * 100_000, id="deeply-nested"),
    pytest.param(
        b'{"code": {"nested": 1}, "message": ["a"], "__type": 5, "error": "x"}', id="odd-types"
    ),
    pytest.param(b'{"error_code": true, "error_msg": false, "detail": 1.5}', id="booleans"),
    pytest.param(b" " * (MAX_BODY + 1), id="huge"),
]


@pytest.mark.parametrize("raw", JUNK)
@pytest.mark.parametrize("status", [400, 401, 404, 409, 429, 502])
@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_junk_bodies_fall_back_to_the_status(model: ErrorModel, status: int, raw: bytes) -> None:
    info = model.read(_response(status, raw=raw))
    assert info.kind is STATUS.read(_response(status)).kind
    assert info.code is None or info.code.isprintable()
    assert "<html" not in info.message


@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_a_huge_message_is_cut_to_the_limit(model: ErrorModel) -> None:
    said = "x" * 200_000
    body = {
        "__type": "C" * 5000,
        "code": "C" * 5000,
        "error_code": "C" * 5000,
        "errorCode": "C" * 5000,
        "message": said,
        "error_msg": said,
        "detail": said,
    }
    info = _read(model, 400, body)
    assert len(info.message) == MESSAGE_LIMIT
    assert info.message.endswith("…")
    assert info.code is None or len(info.code) == CODE_LIMIT


@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_a_body_over_the_parse_limit_is_not_read(model: ErrorModel) -> None:
    raw = json.dumps({"code": "X", "error_code": "X", "message": "m" * MAX_BODY}).encode()
    assert _read(model, 400, raw=raw) == ErrorInfo(status=400, kind=K.OTHER)


def test_control_characters_never_reach_the_message() -> None:
    body = {"code": "Bad\x1b[31mCode", "message": "line one\r\nline two\x00\u2028three"}
    info = _read(OCI, 400, body)
    assert info.code == "Bad [31mCode"
    assert info.message == "line one line two three"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "__type",
        "message",
        "Message",
        "code",
        "Code",
        "error_code",
        "error_msg",
        "solution_msg",
        "error",
        "detail",
        "title",
        "errorCode",
        "status",
    ]
)


@given(
    status=st.integers(min_value=100, max_value=599),
    body=st.dictionaries(KEYS, JSON_VALUES, max_size=6) | JSON_VALUES,
    header=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
def test_no_body_makes_a_model_raise(status: int, body: Any, header: str) -> None:
    raw = json.dumps(body).encode()
    for model in MODELS.values():
        info = model.read(_response(status, raw=raw, **{"x-amzn-ErrorType": header}))
        assert (info.kind is None) == (status < 400)
        assert len(info.message) <= MESSAGE_LIMIT
        assert info.message == " ".join(info.message.split())
        assert info.message.isprintable()
        assert info.code is None or (0 < len(info.code) <= CODE_LIMIT and info.code.isprintable())
        assert str(info).startswith(str(status))


@given(raw=st.binary(max_size=200), status=st.integers(min_value=400, max_value=599))
def test_no_bytes_make_a_model_raise(raw: bytes, status: int) -> None:
    for model in MODELS.values():
        assert model.read(_response(status, raw=raw)).status == status
