"""Fast-tier fixtures: a gateway over fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpline.testing.serving import Gateway, make_gateway


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    return make_gateway(tmp_path)
