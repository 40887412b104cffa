"""Example operations: printed by `demo`, shown in the README, and run by the tests."""

from __future__ import annotations

EXAMPLE_QUERY = """\
query Billing {
  billingAccounts(
    accounts: [
      { provider: ALMANAC, accountId: "org_acme" }
      { provider: ALMANAC, accountId: "org_globex" }
      { provider: AUTOPOSTING }
    ]
  ) {
    __typename
    ... on BillingAccount {
      id
      provider
      accountId
      currentPlan { id planId name price { amount currency } interval }
      plans { id planId name current }
      subscription { id status trialEnd currentPeriodEnd pendingPlanId }
      manage { allowed reason }
      usageMeters { id featureId used granted remaining unlimited usedFraction resetsAt }
    }
    ... on Error { code message provider }
  }
}
"""

EXAMPLE_MUTATION = """\
mutation Upgrade {
  startCheckout(
    input: {
      provider: AUTOPOSTING
      planId: "plan_pro"
      successUrl: "https://app.example.com/billing/success"
      cancelUrl: "https://app.example.com/billing/cancel"
    }
  ) {
    __typename
    ... on CheckoutSession { id provider planId url sessionId }
    ... on Error { code message provider }
    ... on ProviderError { retryable retryAfterSeconds }
  }
}
"""
