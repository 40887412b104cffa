"""Seed data and credentials of the simulated upstreams, as wire-shaped module constants.

Timestamps are fixed (not relative to now) so tests and demos are deterministic.
"""

from __future__ import annotations

from typing import Any, TypedDict

# --- Almanac -------------------------------------------------------------------------------------

# Demo credentials of a simulator, not secrets.
ALMANAC_OWNER_TOKEN = "alm_owner_demo"  # noqa: S105
ALMANAC_VIEWER_TOKEN = "alm_viewer_demo"  # noqa: S105
# Token -> may it manage billing (reason "permission" either way).
ALMANAC_TOKENS: dict[str, bool] = {ALMANAC_OWNER_TOKEN: True, ALMANAC_VIEWER_TOKEN: False}


class AlmanacPlanFeature(TypedDict):
    feature_id: str
    included: int | None  # None: unlimited


class AlmanacPlan(TypedDict):
    plan_id: str
    name: str
    price: float | None
    interval: str | None
    group: str | None
    features: list[AlmanacPlanFeature]


class AlmanacUsage(TypedDict):
    feature_id: str
    usage: float
    granted: float
    remaining: float
    unlimited: bool
    overage_allowed: bool
    next_reset_at: int | None


class AlmanacOrganization(TypedDict):
    current_plan_id: str
    # None: manage follows the token; "not_allowed": no token may manage this organization.
    manage_reason: str | None
    usage: list[AlmanacUsage]


def _features(
    pages: int | None, editors: int | None, storage_gb: int | None
) -> list[AlmanacPlanFeature]:
    return [
        {"feature_id": "pages", "included": pages},
        {"feature_id": "editors", "included": editors},
        {"feature_id": "storage_gb", "included": storage_gb},
    ]


ALMANAC_PLANS: tuple[AlmanacPlan, ...] = (
    {"plan_id": "free", "name": "Free", "price": 0, "interval": "month", "group": None,
     "features": _features(100, 3, 1)},
    {"plan_id": "pro", "name": "Pro", "price": 29, "interval": "month", "group": None,
     "features": _features(1000, None, 10)},
    {"plan_id": "pro_yearly", "name": "Pro (yearly)", "price": 290, "interval": "year",
     "group": "pro", "features": _features(1000, None, 10)},
    {"plan_id": "team", "name": "Team", "price": 99, "interval": "month", "group": None,
     "features": _features(10000, None, 100)},
    {"plan_id": "enterprise", "name": "Enterprise", "price": None, "interval": None,
     "group": "sales", "features": _features(None, None, None)},
)  # fmt: skip

# next_reset_at is a Unix timestamp in an undocumented unit, so the seed mixes both:
_RESET_S = 1796083200  # SECONDS: 2026-12-01T00:00:00Z
_RESET_MS = 1797292800_000  # MILLISECONDS: 2026-12-15T00:00:00Z
_RESET_YEAR_S = 1825027200  # SECONDS: 2027-11-01T00:00:00Z


def _meter(
    feature_id: str,
    usage: float,
    granted: float,
    *,
    next_reset_at: int | None,
    unlimited: bool = False,
    overage_allowed: bool = False,
) -> AlmanacUsage:
    remaining = 0 if unlimited else max(granted - usage, 0)
    return {
        "feature_id": feature_id,
        "usage": usage,
        "granted": granted,
        "remaining": remaining,
        "unlimited": unlimited,
        "overage_allowed": overage_allowed,
        "next_reset_at": next_reset_at,
    }


ALMANAC_ORGANIZATIONS: dict[str, AlmanacOrganization] = {
    "org_acme": {
        "current_plan_id": "pro",
        "manage_reason": None,
        "usage": [
            _meter("pages", 420, 1000, next_reset_at=_RESET_S),  # normal; seconds
            _meter("editors", 7, 0, next_reset_at=None, unlimited=True),  # unlimited; null
            _meter("storage_gb", 12, 10, next_reset_at=_RESET_MS, overage_allowed=True),  # ms
        ],
    },
    "org_globex": {
        "current_plan_id": "free",
        "manage_reason": None,
        "usage": [
            _meter("pages", 35, 100, next_reset_at=_RESET_MS),  # milliseconds
            _meter("editors", 2, 3, next_reset_at=_RESET_MS),  # milliseconds
        ],
    },
    "org_initech": {
        "current_plan_id": "team",
        "manage_reason": None,
        "usage": [
            _meter("pages", 5200, 10000, next_reset_at=_RESET_S),  # seconds
            _meter("editors", 41, 0, next_reset_at=_RESET_S, unlimited=True),  # seconds
        ],
    },
    "org_umbrella": {
        "current_plan_id": "pro_yearly",
        "manage_reason": "not_allowed",
        "usage": [_meter("pages", 990, 1000, next_reset_at=_RESET_YEAR_S)],  # seconds
    },
    "org_hooli": {
        "current_plan_id": "enterprise",
        "manage_reason": None,
        "usage": [_meter("pages", 250000, 0, next_reset_at=None, unlimited=True)],
    },
    "org_stark": {"current_plan_id": "free", "manage_reason": None, "usage": []},
}
ALMANAC_ORGANIZATION_IDS: tuple[str, ...] = tuple(ALMANAC_ORGANIZATIONS)

# --- Autoposting ---------------------------------------------------------------------------------

AUTOPOSTING_PRO_KEY = "sk-social-demo-pro"
AUTOPOSTING_TRIAL_KEY = "sk-social-demo-trial"
AUTOPOSTING_SUSPENDED_KEY = "sk-social-demo-suspended"
AUTOPOSTING_PLAN_IDS: tuple[str, ...] = ("plan_starter", "plan_pro", "plan_business")
# Last day covered by /usage/tokens dailyUsage.
AUTOPOSTING_USAGE_END = "2026-11-21"


class AutopostingAccount(TypedDict):
    org_id: str
    suspended: bool
    billing_status: dict[str, Any]
    credit_summary: dict[str, Any]
    credits: dict[str, Any]  # documentation shape or SDK shape, per account
    usage_summary: dict[str, Any]  # documentation shape or SDK shape, per account
    token_breakdown_30d: dict[str, int]  # /usage/tokens scales it by period; the sum is the total


def _status(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "plan": "pro",
        "planName": "Pro",
        "billingCycle": "monthly",
        "status": "active",
        "currentPeriodStart": "2026-11-01T00:00:00.000Z",
        "currentPeriodEnd": "2026-12-01T00:00:00.000Z",
        "trialEnd": None,
        "isTrialing": False,
        "cancelledAt": None,
        "suspendedAt": None,
        "pendingPlan": None,
        "pendingChangeDate": None,
        "dodoCustomerId": None,
        "setupFeeVerified": True,
        "accountLimit": 10,
        "accountsUsed": 3,
        "creditBalance": 450,
        "costMultiplier": 1.5,
    }
    return base | fields


def _credit_summary(balance: int, allocation: int, breakdown: dict[str, int]) -> dict[str, Any]:
    return {
        "balance": balance,
        "monthlyAllocation": allocation,
        "used": sum(breakdown.values()),
        "breakdown": breakdown,
        "resetAt": "2026-12-01T00:00:00Z",
    }


def _usage_summary_documented(tokens: int, credits_used: int) -> dict[str, Any]:
    return {
        "period": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-30T23:59:59Z"},
        "posts": {"published": 42, "scheduled": 8, "failed": 2},
        "clips": {"uploaded": 5, "rendered": 12},
        "agents": {"runs": 30, "postsGenerated": 28},
        "credits": {"allocated": 500, "used": credits_used, "remaining": 500 - credits_used},
        "aiTokens": {"total": 1250000, "used": tokens},
    }


AUTOPOSTING_ACCOUNTS: dict[str, AutopostingAccount] = {
    AUTOPOSTING_PRO_KEY: {
        "org_id": "org-pro-demo",
        "suspended": False,
        "billing_status": _status(dodoCustomerId="cus_demo_pro"),
        "credit_summary": _credit_summary(450, 500, {"clips": 30, "aiGeneration": 15, "other": 5}),
        "credits": {"balance": 450, "monthlyAllocation": 500, "resetAt": "2026-12-01T00:00:00Z"},
        "usage_summary": _usage_summary_documented(482000, 50),
        "token_breakdown_30d": {
            "agents": 210000,
            "ideaGeneration": 95000,
            "carouselGeneration": 80000,
            "postRewrite": 52000,
            "captionGeneration": 30000,
            "other": 15000,
        },
    },
    AUTOPOSTING_TRIAL_KEY: {
        "org_id": "org-trial-demo",
        "suspended": False,
        "billing_status": _status(
            plan="plan_pro",
            status="trialing",
            isTrialing=True,
            trialEnd="2026-11-25T00:00:00.000Z",
            currentPeriodStart="2026-11-22T00:00:00.000Z",
            currentPeriodEnd="2026-12-22T00:00:00.000Z",
            dodoCustomerId="cus_demo_trial",
            setupFeeVerified=False,
            accountLimit=-1,
            accountsUsed=7,
            creditBalance=750,
        ),
        "credit_summary": _credit_summary(750, 1000, {"clips": 0, "aiGeneration": 250}),
        # SDK shape: balance in cents.
        "credits": {
            "balance": 750,
            "balanceFormatted": "$7.50",
            "recentUsage": [
                {
                    "date": "2026-11-21",
                    "description": "Idea generation",
                    "amount": 12,
                    "type": "credit_usage",
                },
                {
                    "date": "2026-11-20",
                    "description": "Carousel generation",
                    "amount": 30,
                    "type": "credit_usage",
                },
            ],
            "totalSpent30d": 2.5,
        },
        "usage_summary": {
            "range": {"from": "2026-11-01T00:00:00Z", "to": "2026-11-30T23:59:59Z"},
            "posts": {
                "total": 40,
                "published": 38,
                "bySource": {"dashboard": 20, "api": 10, "mcp": 4, "cli": 2, "agent": 4},
            },
            "agents": {"total": 3, "active": 2},
            "ai": {
                "totalCostUsd": 0.3125,
                "inputTokens": 75000,
                "outputTokens": 45000,
                "totalTokens": 120000,
                "requests": 64,
                "byModel": [
                    {
                        "model": "gpt-4o",
                        "costUsd": 0.3125,
                        "inputTokens": 75000,
                        "outputTokens": 45000,
                        "requests": 64,
                    },
                ],
            },
            "trend": {
                "posts": [{"date": "2026-11-21", "count": 3}],
                "aiCost": [{"date": "2026-11-21", "costUsd": 0.05, "requests": 9}],
            },
        },
        "token_breakdown_30d": {"agents": 60000, "ideaGeneration": 40000, "other": 20000},
    },
    AUTOPOSTING_SUSPENDED_KEY: {
        "org_id": "org-suspended-demo",
        "suspended": True,
        "billing_status": _status(
            plan="business",
            planName="Business",
            status="past_due",
            currentPeriodStart="2026-10-10T00:00:00.000Z",
            currentPeriodEnd="2026-11-10T00:00:00.000Z",
            suspendedAt="2026-11-13T00:00:00.000Z",
            pendingPlan="plan_starter",
            pendingChangeDate="2026-12-01T00:00:00.000Z",
            dodoCustomerId="cus_demo_suspended",
            accountLimit=5,
            accountsUsed=12,
            creditBalance=0,
        ),
        "credit_summary": _credit_summary(0, 500, {"clips": 320, "aiGeneration": 170, "other": 10}),
        "credits": {"balance": 0, "monthlyAllocation": 500, "resetAt": "2026-12-01T00:00:00Z"},
        "usage_summary": _usage_summary_documented(15000, 500),
        "token_breakdown_30d": {"agents": 9000, "other": 6000},
    },
}
