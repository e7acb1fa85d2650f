"""The landing zone as a Dagster resource: one interface, a local-folder or an S3 implementation
chosen by URL when the resource is used (not when the code location is imported)."""

import os
from functools import cached_property
from urllib.parse import urlparse

import dagster as dg
from pydantic import Field

from hub_pipelines import settings
from hub_pipelines.landing import LandingZone, LocalFolder, S3Prefix


class LandingZoneResource(dg.ConfigurableResource):
    """Where batch files land: a folder path (or file://) or s3://bucket/prefix.

    Unset fields follow the environment at run time: HUB_LANDING_URL (default
    $HUB_HOME/landing) and, for S3-compatible servers, HUB_S3_ENDPOINT_URL. S3 credentials come
    from the standard AWS variables, never from configuration.
    """

    url: str | None = Field(default=None, description="folder, file:// or s3://bucket/prefix")
    archive_prefix: str = Field(default="archive/", description="S3 prefix ingested objects move to")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint, e.g. http://minio:9000"
    )
    s3_region: str | None = None

    @cached_property
    def zone(self) -> LandingZone:
        url = self.url or os.environ.get("HUB_LANDING_URL") or str(settings.default_landing_dir())
        parsed = urlparse(url)
        if parsed.scheme == "s3":
            return S3Prefix(
                bucket=parsed.netloc,
                prefix=parsed.path.lstrip("/"),
                archive_prefix=self.archive_prefix,
                endpoint_url=self.s3_endpoint_url or os.environ.get("HUB_S3_ENDPOINT_URL"),
                region_name=self.s3_region or os.environ.get("AWS_DEFAULT_REGION"),
            )
        if parsed.scheme in ("", "file"):
            return LocalFolder(parsed.path if parsed.scheme == "file" else url)
        raise ValueError(f"landing zone URL {url!r}: use a folder path, file:// or s3://")
