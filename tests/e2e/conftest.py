"""Fixtures for the end-to-end tests (qgis_process and the QGIS desktop as subprocesses)."""
import pytest

from .qgis_cli import QgisProcess


@pytest.fixture(scope="session")
def qgis_process(tmp_path_factory):
    qp = QgisProcess(tmp_path_factory.mktemp("qgis_process"))
    qp.enable()
    return qp
