"""UI fixtures: a real gateway (over fakes here; over the real parts in the integration tests)
served by uvicorn on a free port in a thread, with the console router mounted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ui_support import LiveGateway, mount_console, serve, with_versions


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveGateway]:
    """A gateway over fakes, listening on a real port; the UI is pointed at it."""
    from helpline.testing.serving import make_gateway

    gateway = with_versions(make_gateway(tmp_path))
    served = serve(mount_console(gateway.client.app))
    monkeypatch.setenv("HELPLINE_UI__GATEWAY_URL", served.url)
    yield LiveGateway(served.url, gateway)
    served.stop()


@pytest.fixture
def gw(tmp_path: Path):
    """A gateway over fakes with the console router mounted, called in-process (TestClient)."""
    from helpline.testing.serving import make_gateway

    gateway = with_versions(make_gateway(tmp_path))
    mount_console(gateway.client.app)
    return gateway


@pytest.fixture(autouse=True, scope="session")
def _skip_component_scan() -> Iterator[None]:
    """AppTest scans the metadata of every installed package for custom components on each new
    AppTest (1-2 s each here); the app uses none, so the scan is skipped in these tests."""
    from streamlit.components.v2.component_manager import BidiComponentManager

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BidiComponentManager, "discover_and_register_components", lambda self, **_: None)
        yield
