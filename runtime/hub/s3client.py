"""Reaching an S3-compatible store: the `s3://bucket/prefix` URL, the boto3 client, its errors.

Plain S3 only: SigV4, path-style addressing when an endpoint is given (MinIO, Ceph RGW, R2,
moto in the tests), virtual-hosted on AWS itself, and no checksum headers beyond what every
S3 API accepts (botocore's newer default CRC checksums are turned off: several S3-compatible
stores refuse them). The endpoint comes from FLOWCTL_S3_ENDPOINT_URL; credentials and region
from boto3's standard chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_REGION or AWS_DEFAULT_REGION, AWS_PROFILE, instance roles). Credentials never appear
in a message or a log line: only the endpoint, bucket, key and S3's error code do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from hub_store.errors import BlobStoreUnavailable

T = TypeVar("T")
ENDPOINT_ENV = "FLOWCTL_S3_ENDPOINT_URL"
DEFAULT_REGION = "us-east-1"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
# Bucket names as S3 accepts them (3-63 of a-z, 0-9, '.', '-'; starting and ending alnum).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


@dataclass(frozen=True)
class S3Location:
    """Where blobs live: a bucket and a key prefix ('' or ending in '/')."""

    bucket: str
    prefix: str
    endpoint: str | None

    def describe(self) -> str:
        """`s3://bucket/prefix` (at the endpoint, when one is set): no credentials in it."""
        where = f"s3://{self.bucket}/{self.prefix}"
        return f"{where} at {self.endpoint}" if self.endpoint else where


def parse_s3_url(url: str, *, endpoint: str | None = None) -> S3Location:
    """`s3://bucket/prefix` as an S3Location; ValueError naming what is wrong."""
    if not url.startswith("s3://"):
        raise ValueError(f"an S3 blob store URL starts with s3://, not {url!r}")
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise ValueError("put S3 credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, not in the blobs URL")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"invalid S3 bucket name {bucket!r} in {url!r} (3-63 of a-z, 0-9, '.', '-')")
    prefix = "/".join(part for part in prefix.split("/") if part)
    if any(part in (".", "..") for part in prefix.split("/")):
        raise ValueError(f"the S3 prefix of {url!r} may not contain '.' or '..'")
    endpoint = endpoint if endpoint is not None else (os.environ.get(ENDPOINT_ENV) or None)
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"{ENDPOINT_ENV} must be an http:// or https:// URL, not {endpoint!r}")
    return S3Location(bucket, prefix + "/" if prefix else "", endpoint.rstrip("/") if endpoint else None)


def make_client(location: S3Location, *, max_connections: int = 16) -> Any:
    """A boto3 S3 client for `location` (credentials and region from the standard AWS chain)."""
    import boto3
    from botocore.config import Config

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    config = Config(
        signature_version="s3v4", region_name=region,
        s3={"addressing_style": "path" if location.endpoint else "auto"},
        retries={"max_attempts": 4, "mode": "standard"},
        connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT, max_pool_connections=max_connections,
        request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return boto3.session.Session().client("s3", endpoint_url=location.endpoint, config=config)


def error_code(exc: BaseException) -> str | None:
    """S3's error code of a botocore ClientError (e.g. NoSuchKey, 404, AccessDenied), else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def is_missing(exc: BaseException) -> bool:
    """Whether a ClientError says the key (or bucket) does not exist."""
    return error_code(exc) in MISSING


@contextmanager
def unavailable(location: S3Location, what: str) -> Iterator[None]:
    """Turn botocore's errors into one-line BlobStoreUnavailable errors naming `what`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = error_code(exc) or "error"
        message = exc.response.get("Error", {}).get("Message") or ""
        detail = f"{code}: {message}" if message else code
        raise BlobStoreUnavailable(f"S3 {what} failed ({location.describe()}): {detail}") from None
    except BotoCoreError as exc:
        raise BlobStoreUnavailable(f"S3 {what} failed ({location.describe()}): {exc}") from None


def check_bucket(client: Any, location: S3Location) -> None:
    """Make sure the bucket exists and answers; BlobStoreUnavailable (one line) otherwise."""
    from botocore.exceptions import ClientError

    with unavailable(location, f"access to bucket {location.bucket!r}"):
        try:
            client.head_bucket(Bucket=location.bucket)
        except ClientError as exc:
            if is_missing(exc):
                raise BlobStoreUnavailable(
                    f"the S3 bucket {location.bucket!r} does not exist ({location.describe()}); "
                    f"create it first (e.g. aws s3 mb s3://{location.bucket})") from None
            if error_code(exc) in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise BlobStoreUnavailable(
                    f"the S3 store refused access to bucket {location.bucket!r} ({location.describe()}): "
                    "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and the bucket's policy") from None
            raise


def call(location: S3Location, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
    """`fn(**kwargs)` with botocore's errors as BlobStoreUnavailable (a missing key is left to the caller)."""
    from botocore.exceptions import ClientError

    try:
        with unavailable(location, what):
            try:
                return fn(**kwargs)
            except ClientError as exc:
                if is_missing(exc):
                    raise _Missing() from None
                raise
    except _Missing:
        raise KeyError(kwargs.get("Key", "")) from None


class _Missing(Exception):
    """A missing key, carried past `unavailable` (which maps every other ClientError)."""
