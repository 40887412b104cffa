"""Simulated Almanac and Autoposting APIs, for `demo` mode and integration tests.

They play the external services, so they import only the stdlib, starlette and uvicorn.
"""

from gateway.sandbox.almanac import create_almanac_app
from gateway.sandbox.autoposting import create_autoposting_app
from gateway.sandbox.data import (
    ALMANAC_ORGANIZATION_IDS,
    ALMANAC_ORGANIZATIONS,
    ALMANAC_OWNER_TOKEN,
    ALMANAC_PLANS,
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_ACCOUNTS,
    AUTOPOSTING_PLAN_IDS,
    AUTOPOSTING_PRO_KEY,
    AUTOPOSTING_SUSPENDED_KEY,
    AUTOPOSTING_TRIAL_KEY,
)
from gateway.sandbox.server import RunningSandbox, SandboxThread, start_sandbox
from gateway.sandbox.state import CheckoutRecord, Fault, RecordedCall, SandboxState

__all__ = [
    "ALMANAC_ORGANIZATIONS",
    "ALMANAC_ORGANIZATION_IDS",
    "ALMANAC_OWNER_TOKEN",
    "ALMANAC_PLANS",
    "ALMANAC_VIEWER_TOKEN",
    "AUTOPOSTING_ACCOUNTS",
    "AUTOPOSTING_PLAN_IDS",
    "AUTOPOSTING_PRO_KEY",
    "AUTOPOSTING_SUSPENDED_KEY",
    "AUTOPOSTING_TRIAL_KEY",
    "CheckoutRecord",
    "Fault",
    "RecordedCall",
    "RunningSandbox",
    "SandboxState",
    "SandboxThread",
    "create_almanac_app",
    "create_autoposting_app",
    "start_sandbox",
]
