"""Where backups go: an S3 bucket and prefix, with prefect-aws credentials."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field

from blocks.aws_clients import aws_client


class BackupStore(Block):
    """An S3 bucket and key prefix holding database dumps and their manifests.

    Composes prefect-aws ``AwsCredentials`` (keys, region, and ``aws_client_parameters``
    such as ``endpoint_url`` for S3-compatible stores) instead of duplicating them.
    """

    _block_type_name: ClassVar[str] = "Opsflows Backup Store"
    _block_type_slug: ClassVar[str] = "opsflows-backup-store"
    _description: ClassVar[str | None] = "S3 bucket and prefix for database backups."
    _documentation_url: ClassVar[Any] = "https://docs.prefect.io/integrations/prefect-aws"

    bucket: str = Field(description="S3 bucket name.")
    prefix: str = Field(default="backups/", description="Key prefix for every backup object.")
    aws_credentials: AwsCredentials = Field(
        default_factory=AwsCredentials, description="prefect-aws credentials for the bucket."
    )
    retention_days: int = Field(default=30, description="Keep backups this many days.")
    min_backups: int = Field(default=7, description="Never keep fewer backups than this.")

    def s3_client(self) -> Any:
        """A boto3 S3 client built from the credentials block (cached, shared models)."""
        return aws_client(self.aws_credentials, "s3")

    def key(self, *parts: str) -> str:
        """An object key under this store's prefix."""
        prefix = self.prefix if not self.prefix or self.prefix.endswith("/") else self.prefix + "/"
        return prefix + "/".join(p.strip("/") for p in parts)
