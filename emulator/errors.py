"""Service errors as the real Bedrock runtime and S3 Vectors endpoints send them.

botocore maps an error response to an exception class by the ``x-amzn-ErrorType`` header and
decides whether to retry it by code and HTTP status, so each code must travel with the status
the service's model gives it (``../shared/reference/aws-apis.md`` §1.8 and §2.7). The same code can
carry a different status in the two services (``ServiceQuotaExceededException`` is 400 in Bedrock
runtime and 402 in S3 Vectors; ``ConflictException`` 400 and 409), hence one table per service.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

BEDROCK_RUNTIME_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "ValidationException": 400,
        "AccessDeniedException": 403,
        "ResourceNotFoundException": 404,
        "ThrottlingException": 429,
        "ModelTimeoutException": 408,
        "ModelNotReadyException": 429,
        "ModelErrorException": 424,
        "ServiceQuotaExceededException": 400,
        "ConflictException": 400,
        "InternalServerException": 500,
        "ServiceUnavailableException": 503,
    }
)

S3VECTORS_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "ValidationException": 400,
        "AccessDeniedException": 403,
        "NotFoundException": 404,
        "RequestTimeoutException": 408,
        "ConflictException": 409,
        "ServiceQuotaExceededException": 402,
        "TooManyRequestsException": 429,
        "InternalServerException": 500,
        "ServiceUnavailableException": 503,
        "KmsDisabledException": 400,
        "KmsInvalidKeyUsageException": 400,
        "KmsInvalidStateException": 400,
        "KmsNotFoundException": 400,
    }
)


class ServiceError(Exception):
    """An error answer: ``code`` goes to ``x-amzn-ErrorType``, ``status`` is the HTTP status, and
    ``message`` with any ``extra`` members (``fieldList``, ``originalStatusCode``…) is the body.
    """

    def __init__(
        self, code: str, status: int, message: str, extra: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status
        self.message = message
        self.extra: Mapping[str, Any] = MappingProxyType(dict(extra or {}))

    def body(self) -> dict[str, Any]:
        """The JSON error document the service returns."""
        return {"message": self.message, **self.extra}


def bedrock_error(code: str, message: str, **extra: Any) -> ServiceError:
    """A Bedrock runtime error with the status its service model assigns to ``code``."""
    return ServiceError(code, BEDROCK_RUNTIME_STATUS[code], message, extra)


def s3vectors_error(code: str, message: str, **extra: Any) -> ServiceError:
    """An S3 Vectors error with the status its service model assigns to ``code``."""
    return ServiceError(code, S3VECTORS_STATUS[code], message, extra)


def s3vectors_validation(message: str, path: str | None = None) -> ServiceError:
    """An S3 Vectors ``ValidationException``; ``path`` names the bad member in ``fieldList``."""
    if path is None:
        return s3vectors_error("ValidationException", message)
    return s3vectors_error(
        "ValidationException", message, fieldList=[{"path": path, "message": message}]
    )


def bedrock_validation(message: str) -> ServiceError:
    """A Bedrock ``ValidationException`` with the message the model's input checker gives."""
    return bedrock_error("ValidationException", message)
