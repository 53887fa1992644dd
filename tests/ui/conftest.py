"""UI fixtures: a real gateway (over fakes here; over the real parts in the integration tests)
served by uvicorn on a free port in a thread, with the console router mounted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ui_support import LiveGateway, mount_console, serve


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveGateway]:
    """A gateway over fakes, listening on a real port; the UI is pointed at it."""
    from helpline.testing.serving import make_gateway

    gateway = make_gateway(tmp_path)
    served = serve(mount_console(gateway.client.app))
    monkeypatch.setenv("HELPLINE_UI__GATEWAY_URL", served.url)
    yield LiveGateway(served.url, gateway)
    served.stop()


@pytest.fixture
def gw(tmp_path: Path):
    """A gateway over fakes with the console router mounted, called in-process (TestClient)."""
    from helpline.testing.serving import make_gateway

    gateway = make_gateway(tmp_path)
    mount_console(gateway.client.app)
    return gateway
