"""``oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]`` parsing."""

from __future__ import annotations

import pytest

from neofleet.bundle import RegistryError
from neofleet.bundle.errors import ReferenceError_
from neofleet.bundle.oci import OciReference, parse_reference

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (
            "oci://127.0.0.1:5000/models/resnet:v1",
            OciReference("127.0.0.1:5000", "models/resnet", "v1", None),
        ),
        (
            f"oci://127.0.0.1:5000/models/resnet@{DIGEST}",
            OciReference("127.0.0.1:5000", "models/resnet", None, DIGEST),
        ),
        (
            f"oci://registry.example.com/a/b/c:1.0-rc_1@{DIGEST}",
            OciReference("registry.example.com", "a/b/c", "1.0-rc_1", DIGEST),
        ),
        ("oci://localhost/resnet", OciReference("localhost", "resnet", None, None)),
        ("oci://Registry.Example.COM:443/x", OciReference("registry.example.com:443", "x")),
        ("oci://[::1]:5000/m/n:latest", OciReference("[::1]:5000", "m/n", "latest")),
        ("oci://r/my.models/res-net__v2:V2", OciReference("r", "my.models/res-net__v2", "V2")),
    ],
)
def test_valid_references(ref: str, expected: OciReference) -> None:
    parsed = parse_reference(ref)
    assert parsed == expected
    assert parse_reference(str(parsed)) == parsed


def test_uri_is_canonical_by_digest() -> None:
    ref = parse_reference(f"oci://127.0.0.1:5000/models/resnet:v1@{DIGEST}")
    assert ref.uri == f"oci://127.0.0.1:5000/models/resnet@{DIGEST}"
    assert str(ref) == f"oci://127.0.0.1:5000/models/resnet:v1@{DIGEST}"


def test_uri_needs_a_digest() -> None:
    with pytest.raises(ReferenceError_):
        _ = parse_reference("oci://127.0.0.1:5000/models/resnet:v1").uri


@pytest.mark.parametrize(
    ("ref", "host"),
    [
        ("oci://127.0.0.1:5000/a", "127.0.0.1"),
        ("oci://[::1]:80/a", "[::1]"),
        ("oci://h.io/a", "h.io"),
    ],
)
def test_host_drops_the_port(ref: str, host: str) -> None:
    assert parse_reference(ref).host == host


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "127.0.0.1:5000/models/resnet",
        "http://127.0.0.1:5000/models/resnet",
        "docker://127.0.0.1:5000/models/resnet",
        "oci://",
        "oci://127.0.0.1:5000",
        "oci://127.0.0.1:5000/",
        "oci:///models/resnet",
        "oci://127.0.0.1:5000/Models/resnet",
        "oci://127.0.0.1:5000/models/resnet/",
        "oci://127.0.0.1:5000/models//resnet",
        "oci://127.0.0.1:5000/models/../resnet",
        "oci://127.0.0.1:5000/-models/resnet",
        "oci://127.0.0.1:5000/models/resnet:",
        "oci://127.0.0.1:5000/models/resnet:.v1",
        "oci://127.0.0.1:5000/models/resnet:" + "t" * 129,
        "oci://127.0.0.1:5000/models/resnet@",
        "oci://127.0.0.1:5000/models/resnet@sha256:abc",
        f"oci://127.0.0.1:5000/models/resnet@sha256:{HEX.upper()}",
        f"oci://127.0.0.1:5000/models/resnet@sha512:{HEX}{HEX}",
        f"oci://127.0.0.1:5000/models/resnet@{DIGEST}0",
        f"oci://127.0.0.1:5000/models/resnet@{DIGEST}:v1",
        "oci://127.0.0.1:0/models/resnet",
        "oci://127.0.0.1:70000/models/resnet",
        "oci://127.0.0.1:port/models/resnet",
        "oci://-bad-.host/models/resnet",
        "oci://user@host/models/resnet",
        "oci://host/models/resnet:v1\n",
        " oci://host/models/resnet",
        "oci://host/models resnet",
        "oci://host/models/resnet?tag=v1",
        "oci://host/" + "a" * 256,
    ],
)
def test_malformed_references(ref: str) -> None:
    with pytest.raises(ReferenceError_) as info:
        parse_reference(ref)
    assert isinstance(info.value, RegistryError)
    assert info.value.reason == "InvalidReference"
