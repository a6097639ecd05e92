"""Runbook "Backup": the daily backup of the application database to S3.

The flow itself lives in :mod:`procedures.backup`, because the migrate runbook takes the same
backup (as a subflow) before it changes the schema; this module is its deployment's
entrypoint (``flows/backup.py:backup_database``).
"""

from procedures.backup import backup_database

__all__ = ["backup_database"]
