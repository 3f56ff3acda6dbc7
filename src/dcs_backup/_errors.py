"""The exceptions of dcs-backup: every failure a user can meet is one of these.

Each carries a one-sentence message meant for a person, and ``exit_code`` tells the CLI
what to return (2 for usage or configuration, 1 for a failed operation).
"""

from __future__ import annotations


class DcsBackupError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class ConfigError(DcsBackupError):
    """Bad flags, missing credentials, an unusable output directory."""

    exit_code = 2


class ApiError(DcsBackupError):
    """The DCS or IAM API answered with an error."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_code: str | None = None,
        error_msg: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id


class AuthError(ApiError):
    """The API refused the credentials (401/403): never retried, exit code 2."""

    exit_code = 2


class NotFoundError(ApiError):
    """The instance, backup or project does not exist (404 or a DCS 'does not exist' code)."""


class MalformedResponseError(DcsBackupError):
    """An answer that is not the JSON the API documents (HTML, missing fields, wrong types)."""


class BackupNotReadyError(DcsBackupError):
    """No finished backup to download, or waiting for one ran out of time."""


class UnsafeNameError(DcsBackupError):
    """A file name from the API that is not a plain base name."""


class LinkExpiredError(DcsBackupError):
    """A presigned link expired and there is no way to fetch a new one."""


class TransferError(DcsBackupError):
    """One file could not be downloaded; ``retryable`` says whether another attempt may help."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class DownloadFailedError(DcsBackupError):
    """Some files of a backup failed; their partial files are kept for a rerun."""


class IntegrityError(DcsBackupError):
    """A downloaded file failed a check (size, RDB checksum, AOF format, MD5 against ETag)."""


class DiskSpaceError(DcsBackupError):
    """The output directory's file system cannot hold the backup."""
