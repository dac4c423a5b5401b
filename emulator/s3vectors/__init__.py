"""Local stand-in for Amazon S3 Vectors: the service logic, without HTTP (see ``service``)."""

from emulator.s3vectors.search import SearchSettings
from emulator.s3vectors.service import ROUTES, Route, S3VectorsService

__all__ = ["ROUTES", "Route", "S3VectorsService", "SearchSettings"]
