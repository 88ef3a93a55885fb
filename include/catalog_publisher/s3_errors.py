"""One classifier for every S3 failure, by exception type and HTTP status: what it means and who acts.

Three kinds, whoever meets them (the upload of one image, the bucket check and listing, the run's
artifacts on object storage):

- SERVICE: S3 did not answer, or answered that it cannot serve now (5xx, 503 SlowDown, 429, 408,
  a checksum garbled on the way, an expired session token), after the client's own retries.
  It may pass on its own: the task raises ServiceUnavailableError and Airflow retries it.
- CONFIG: the setting is wrong for every request (the bucket does not exist, the credentials are
  refused, the wrong region). Nothing will pass until someone fixes it: fail at once.
- OBJECT: this one request was refused for good (403 AccessDenied on a key, a KMS key that denies
  or is disabled, 400 InvalidRequest, 412). For an image: recorded as that image's failure and
  counted against max_failed_percent; for a run's artifact it is a configuration matter.

Both clients are understood: obstore errors (its exception type, the status and S3 <Code> in its
message) and botocore's ClientError (the parsed status and code) and transport errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError

SERVICE, CONFIG, OBJECT = "service", "config", "object"

# S3 error codes that mean "try again later", whatever their status says.
_SERVICE_CODES = {
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "RequestLimitExceeded",
    "OperationAborted",  # a conflicting operation on the bucket is in progress
    "BadDigest",  # the body was garbled on the way: the bytes on disk are what the manifest says
    "XAmzContentSHA256Mismatch",
    "IncompleteBody",
    "ExpiredToken",  # a session token expired mid-run: the retry signs with fresh credentials
    "TokenRefreshRequired",
    "KMS.ThrottlingException",
    "KMS.KMSInternalException",
    "KMS.DependencyTimeoutException",
}
# S3 error codes that no request to this bucket with these settings will get past.
_CONFIG_CODES = {
    "NoSuchBucket",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "InvalidBucketName",
    "PermanentRedirect",  # the bucket is in another region
    "AuthorizationHeaderMalformed",
    "AccountProblem",
    "AllAccessDisabled",
    "NotSignedUp",
}
# Words of a request that never got an answer (obstore and botocore say it in these words).
_NO_ANSWER = (
    "error sending request",
    "connection refused",
    "connection reset",
    "dns error",
    "timed out",
    "broken pipe",
)
_MISSING_KEY_CODES = {"NoSuchKey", "NotFound", "404", "NoSuchUpload"}
_STATUS = re.compile(r"status code: (\d{3})\b")
_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_MESSAGE = re.compile(r"<Message>([^<]{1,300})</Message>")


@dataclass(frozen=True)
class S3Fault:
    """What an S3 exception means: its kind, the HTTP status and S3 error code when S3 answered."""

    kind: str
    status: int | None
    code: str | None
    detail: str  # the first line of the client's message

    @property
    def retry_later(self) -> bool:
        return self.kind == SERVICE

    @property
    def answered(self) -> str:
        """`503 SlowDown`, `403 AccessDenied`, `no answer`: what S3 said, for messages."""
        if self.status is None and self.code is None:
            return "no answer"
        return " ".join(str(part) for part in (self.status, self.code) if part is not None)


def _parts(exc: BaseException) -> tuple[int | None, str | None, str]:
    """(HTTP status, S3 error code, message) of an obstore or botocore exception."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError: already parsed
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = response.get("Error", {}).get("Code") or None
        return (int(status) if status else None), code, str(exc)
    text = str(exc)
    status_match, code_match = _STATUS.search(text), _CODE.search(text)
    return (int(status_match.group(1)) if status_match else None), (code_match.group(1) if code_match else None), text


def _botocore_no_answer(exc: BaseException) -> bool:
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:  # pragma: no cover - botocore comes with the AWS provider
        return False
    return isinstance(exc, (BotoConnectionError, HTTPClientError))


def classify(exc: BaseException) -> S3Fault:
    """The kind of an S3 failure, by exception type and HTTP status (the S3 code where it is more precise)."""
    status, code, text = _parts(exc)
    detail = text.splitlines()[0] if text else type(exc).__name__
    if code in _SERVICE_CODES:
        kind = SERVICE
    elif code in _CONFIG_CODES or (code and code.startswith("InvalidAccessKey")):
        kind = CONFIG
    elif code and code.startswith("KMS."):
        kind = OBJECT  # the KMS key refused (access, disabled, not found): this object stays unencrypted-unwritten
    elif status is None and ("redirect without LOCATION" in text or "BareRedirect" in text):
        kind = CONFIG  # obstore's words for a 301 from the bucket's real region
    elif status is None:
        # No status: S3 never answered (refused, reset, DNS, timeout), or the client refused to send.
        no_answer = _botocore_no_answer(exc) or any(word in text.lower() for word in _NO_ANSWER)
        kind = SERVICE if no_answer else OBJECT
    elif status >= 500 or status in (408, 429):
        kind = SERVICE
    elif status == 401:
        kind = CONFIG
    elif status == 404:
        # A missing key (GET, HEAD) concerns that object; anything else that finds nothing (a PUT, a
        # listing) is missing its bucket.
        request = text.split(" - ")[0]
        missing_file = code is None and isinstance(exc, FileNotFoundError) and " PUT " not in request
        missing_key = code in _MISSING_KEY_CODES or missing_file
        kind = OBJECT if missing_key else CONFIG
    else:
        kind = OBJECT
    return S3Fault(kind, status, code, detail)


def describe(exc: BaseException, where: str) -> str:
    """One line saying what went wrong with S3 at `where` (e.g. "bucket 'b' at http://...") and what to do."""
    fault = classify(exc)
    text = str(exc)
    if fault.kind == SERVICE and fault.status is None and fault.code is None:
        return (
            f"cannot reach S3 for {where} ({fault.detail}); check the endpoint (AWS_ENDPOINT_URL or the aws_default "
            "connection's endpoint_url) and that the service is running"
        )
    if fault.kind == SERVICE:
        said = f"{fault.answered}) after the client's retries"
        return f"S3 could not serve {where} ({said}; try again later ({fault.detail})"
    if fault.code == "NoSuchBucket" or (fault.kind == CONFIG and fault.status == 404):
        return f"{where} does not exist; create it or pass the right bucket name"
    if fault.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken") or fault.status == 401:
        check = "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the aws_default connection"
        return f"S3 rejected the credentials for {where}; {check}"
    redirected = fault.kind == CONFIG and "redirect" in text.lower()
    if fault.code in ("PermanentRedirect", "AuthorizationHeaderMalformed") or redirected:
        check = "set region_name in the aws_default connection (or AWS_DEFAULT_REGION)"
        return f"{where} is in another region ({fault.answered}); {check}"
    if fault.code and fault.code.startswith("KMS."):
        check = "check sse_kms_key_id and that the credentials may use that key"
        return f"the KMS key refused the encryption for {where} ({fault.answered}); {check}"
    if fault.status == 403 or "AccessDenied" in text:
        check = "check that the bucket exists and that the credentials may write to it"
        return f"access to {where} was denied ({fault.answered}); {check}"
    if fault.status is not None:
        said = _MESSAGE.search(text)
        return f"S3 refused the request for {where} ({fault.answered}: {said.group(1) if said else fault.detail})"
    return f"S3 error for {where}: {fault.detail}"


def as_error(exc: BaseException, where: str, what: str = "") -> PublisherError:
    """The exception a task raises for an S3 failure of the whole step: ServiceUnavailableError (Airflow
    retries) for service trouble, else PublisherError (fails at once). `what` leads the message."""
    error = ServiceUnavailableError if classify(exc).retry_later else PublisherError
    message = describe(exc, where)
    return error(f"{what}: {message}" if what else message)
