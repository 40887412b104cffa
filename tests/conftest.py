from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.sandbox import SandboxState
from tests.support import Gateway, make_settings


@pytest.fixture
def state() -> SandboxState:
    return SandboxState()


@pytest.fixture
async def gateway(state: SandboxState) -> AsyncIterator[Gateway]:
    gw = Gateway(settings=make_settings(), state=state)
    yield gw
    await gw.aclose()
