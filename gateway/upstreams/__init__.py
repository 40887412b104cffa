"""HTTP clients of the upstream billing APIs: the only code that speaks HTTP to them."""

from gateway.upstreams._base import UpstreamClient
from gateway.upstreams.almanac import AlmanacClient
from gateway.upstreams.autoposting import AutopostingClient

__all__ = ["AlmanacClient", "AutopostingClient", "UpstreamClient"]
