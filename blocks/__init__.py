"""Typed configuration and credentials for opsflows (Prefect ``Block`` subclasses).

Register them with ``prefect block register -m blocks``.
"""

from blocks.kube import KubeEnvironment, Thresholds
from blocks.notify import NotificationRouting
from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore

__all__ = ["BackupStore", "KubeEnvironment", "NotificationRouting", "PostgresTarget", "Thresholds"]
