"""dcs-backup: download full backups of Huawei Cloud DCS (managed Redis) instances.

The public API is what this module exports; everything in ``dcs_backup._*`` is private.
Names are imported on first use, so that the command line starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Client": "_api",
    "Credentials": "_auth",
    "DownloadConfig": "_config",
    "download_backup": "_downloader",
    "ApiError": "_errors",
    "AuthError": "_errors",
    "BackupNotReadyError": "_errors",
    "ConfigError": "_errors",
    "DcsBackupError": "_errors",
    "DiskSpaceError": "_errors",
    "DownloadFailedError": "_errors",
    "IntegrityError": "_errors",
    "LinkExpiredError": "_errors",
    "MalformedResponseError": "_errors",
    "NotFoundError": "_errors",
    "TransferError": "_errors",
    "UnsafeNameError": "_errors",
    "BackupStarted": "_events",
    "Event": "_events",
    "FileDone": "_events",
    "FileFailed": "_events",
    "FileProgress": "_events",
    "FileRetry": "_events",
    "FileSkipped": "_events",
    "FileStarted": "_events",
    "LinksRefreshed": "_events",
    "Subscriber": "_events",
    "FileChecks": "_integrity",
    "Backup": "_models",
    "BackupLink": "_models",
    "BackupLinks": "_models",
    "parse_links": "_models",
    "Progress": "_progress",
    "DownloadResult": "_result",
    "FileResult": "_result",
    "RetryPolicy": "_retry",
    "VerifyReport": "_verify",
    "verify_directory": "_verify",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dcs_backup' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
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
        DiskSpaceError,
        DownloadFailedError,
        IntegrityError,
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
    from ._integrity import FileChecks
    from ._models import Backup, BackupLink, BackupLinks, parse_links
    from ._progress import Progress
    from ._result import DownloadResult, FileResult
    from ._retry import RetryPolicy
    from ._verify import VerifyReport, verify_directory
