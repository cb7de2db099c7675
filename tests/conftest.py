"""Session-wide real services; see tests/services.py for what each one is."""

import pytest

from tests.services import InfluxDB1, UserManager, VictoriaMetrics


@pytest.fixture(scope="session")
def user_manager():
    with UserManager() as manager:
        yield manager


@pytest.fixture(scope="session")
def influxdb():
    with InfluxDB1() as server:
        yield server


@pytest.fixture(scope="session")
def victoria():
    with VictoriaMetrics() as server:
        yield server
