"""What the boto3 S3 Vectors tests share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IndexRef:
    """A vector index the test created: its bucket, its name and its ARN."""

    bucket: str
    name: str
    arn: str

    def address(self) -> dict[str, str]:
        """The request members that name the index by bucket and index name."""
        return {"vectorBucketName": self.bucket, "indexName": self.name}
