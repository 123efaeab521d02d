"""Every listener of the config has a service: a listener nothing serves would accept a
setting that does nothing (``pochta check`` lists them all as served)."""

from __future__ import annotations

from pochta.config.settings import LISTENER_NAMES
from pochta.server.services import SERVICES


def test_every_listener_has_a_service() -> None:
    assert [n for n in LISTENER_NAMES if n not in SERVICES] == []
