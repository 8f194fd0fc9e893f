"""The SigV4 signer against AWS's published example, and S3 URL/credential handling."""

from __future__ import annotations

import datetime as dt

import pytest

from neofleet.compiler.s3 import (
    EMPTY_SHA256,
    Credentials,
    S3Location,
    object_url,
    sign,
    signed_get_headers,
)

AWS_EXAMPLE = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
MAY_24_2013 = dt.datetime(2013, 5, 24, tzinfo=dt.UTC)


def test_the_aws_documentation_get_object_example_signs_identically() -> None:
    """docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html, GET Object."""
    headers = sign("GET", "https://examplebucket.s3.amazonaws.com/test.txt",
                   {"Range": "bytes=0-9", "x-amz-content-sha256": EMPTY_SHA256},
                   AWS_EXAMPLE, "us-east-1", now=MAY_24_2013)
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    assert headers["x-amz-date"] == "20130524T000000Z"


def test_session_tokens_are_signed_and_anonymous_requests_are_not() -> None:
    env = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_SESSION_TOKEN": "T"}
    headers = signed_get_headers("https://b.s3.us-east-1.amazonaws.com/k", env)
    assert headers["x-amz-security-token"] == "T"
    assert "x-amz-security-token" in headers["Authorization"]
    assert "Authorization" not in signed_get_headers("https://b.s3.amazonaws.com/k", {})


def test_urls_are_virtual_hosted_on_aws_and_path_style_on_an_endpoint() -> None:
    location = S3Location.parse("s3://models/team a/resnet+v1.onnx")
    assert object_url(location, {"AWS_REGION": "eu-west-1"}) == (
        "https://models.s3.eu-west-1.amazonaws.com/team%20a/resnet%2Bv1.onnx")
    assert object_url(location, {"AWS_ENDPOINT_URL_S3": "http://minio.storage:9000/"}) == (
        "http://minio.storage:9000/models/team%20a/resnet%2Bv1.onnx")
    for bad in ("s3://bucket-only", "s3:///key", "https://b/k"):
        with pytest.raises(ValueError, match="is not s3://BUCKET/KEY"):
            S3Location.parse(bad)
