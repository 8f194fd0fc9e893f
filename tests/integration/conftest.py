"""Fixtures for integration tests that need real infrastructure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.registry import RegistryServer, registry_binary


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    """One real docker-registry for the whole session (filesystem storage in a temp dir)."""
    if registry_binary() is None:
        pytest.skip("docker-registry is not installed (Debian package docker-registry)")
    with RegistryServer() as server:
        yield server
