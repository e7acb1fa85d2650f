"""A landing zone under an S3 (or S3-compatible) bucket prefix."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
from botocore.config import Config

from hub_pipelines.landing.base import LandedFile, LandingZone, is_batch_name


class S3Prefix(LandingZone):
    """Batch objects under s3://bucket/prefix, archived to s3://bucket/archive_prefix.

    Credentials come from the usual AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    profiles, instance roles); `endpoint_url` points at an S3-compatible server.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "landing/",
        archive_prefix: str = "archive/",
        endpoint_url: str | None = None,
        region_name: str | None = None,
        page_size: int = 1000,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.archive_prefix = archive_prefix
        self.page_size = page_size
        self.name = f"s3://{bucket}/{prefix}"
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region_name or "us-east-1",
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )

    def list_pending(self, start_after: str = "") -> Iterator[LandedFile]:
        """Paginated ListObjectsV2 from `start_after` (a key relative to the prefix)."""
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs = {
            "Bucket": self.bucket,
            "Prefix": self.prefix,
            "PaginationConfig": {"PageSize": self.page_size},
        }
        if start_after:
            kwargs["StartAfter"] = self.prefix + start_after
        for page in paginator.paginate(**kwargs):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix) :]
                if obj["Key"].startswith(self.archive_prefix) or not is_batch_name(key):
                    continue
                version = f"{obj['ETag'].strip(chr(34))}-{obj['LastModified'].timestamp():.6f}"
                yield LandedFile(key=key, size=obj["Size"], version=version)

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()

    def archive(self, key: str, batch_id: str) -> str:
        directory, _, name = key.rpartition("/")
        target = f"{self.archive_prefix}{directory + '/' if directory else ''}{batch_id[:16]}__{name}"
        self.client.copy_object(
            Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": self.prefix + key}
        )
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        return f"s3://{self.bucket}/{target}"
