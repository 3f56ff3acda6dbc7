"""dcs-backup: download full backups of Huawei Cloud DCS (managed Redis) instances.

The public API is what this module exports; everything in ``dcs_backup._*`` is private.
"""

from ._api import Client
from ._auth import Credentials
from ._config import DownloadConfig
from ._downloader import download_backup
from ._errors import (
    ApiError,
    AuthError,
    BackupNotReadyError,
    ConfigError,
    DcsBackupError,
    DownloadFailedError,
    LinkExpiredError,
    MalformedResponseError,
    NotFoundError,
    TransferError,
    UnsafeNameError,
)
from ._events import (
    BackupStarted,
    Event,
    FileDone,
    FileFailed,
    FileProgress,
    FileRetry,
    FileSkipped,
    FileStarted,
    LinksRefreshed,
    Subscriber,
)
from ._models import Backup, BackupLink, BackupLinks, parse_links
from ._progress import Progress
from ._result import DownloadResult, FileResult
from ._retry import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AuthError",
    "Backup",
    "BackupLink",
    "BackupLinks",
    "BackupNotReadyError",
    "BackupStarted",
    "Client",
    "ConfigError",
    "Credentials",
    "DcsBackupError",
    "DownloadConfig",
    "DownloadFailedError",
    "DownloadResult",
    "Event",
    "FileDone",
    "FileFailed",
    "FileProgress",
    "FileResult",
    "FileRetry",
    "FileSkipped",
    "FileStarted",
    "LinkExpiredError",
    "LinksRefreshed",
    "MalformedResponseError",
    "NotFoundError",
    "Progress",
    "RetryPolicy",
    "Subscriber",
    "TransferError",
    "UnsafeNameError",
    "__version__",
    "download_backup",
    "parse_links",
]
