"""Landing zones: where batch files arrive (a local folder, an S3 prefix), read and archived."""

from hub_pipelines.landing.base import BATCH_SUFFIXES, LandedFile, LandingZone
from hub_pipelines.landing.local import LocalFolder
from hub_pipelines.landing.s3 import S3Prefix

__all__ = ["BATCH_SUFFIXES", "LandedFile", "LandingZone", "LocalFolder", "S3Prefix"]
