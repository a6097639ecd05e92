"""Typed configuration and credentials for opsflows (Prefect ``Block`` subclasses).

Register them with ``prefect block register -m blocks``.
"""

from blocks.certificates import CertificateAuthority, CertificateInventory, TlsEndpoint
from blocks.kube import KubeEnvironment, Thresholds
from blocks.notify import NotificationRouting
from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore

__all__ = [
    "BackupStore",
    "CertificateAuthority",
    "CertificateInventory",
    "KubeEnvironment",
    "NotificationRouting",
    "PostgresTarget",
    "Thresholds",
    "TlsEndpoint",
]
