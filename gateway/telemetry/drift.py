"""Contract drift made visible: each `Drift` the normalizers report is counted, and logged once.

`gateway_upstream_contract_drift_total{provider,endpoint,field,kind}` counts every tolerated field
of every answer normalized (an answer shared by coalescing or the in-process cache is normalized,
so counted, once). The first time this app sees a (provider, field, kind) it writes one WARNING
(logger `gateway.contract`) naming them and the endpoint: never a value, which may be personal
data or a credential. Labels come from the providers' field tables, so they are bounded.
"""

from __future__ import annotations

import logging

from gateway.normalize import Drift, DriftKind
from gateway.telemetry.metrics import Metrics

logger = logging.getLogger("gateway.contract")


class ContractDriftRecorder:
    """The app's `DriftRecorder`: a counter, and a WARNING once per (provider, field, kind)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._warned: set[tuple[str, str, DriftKind]] = set()

    def __call__(self, drift: Drift) -> None:
        provider = drift.provider.value
        self.metrics.contract_drift.labels(
            provider, drift.endpoint, drift.field, drift.kind.value
        ).inc(drift.count)
        key = (provider, drift.field, drift.kind)
        if key in self._warned:
            return
        self._warned.add(key)
        logger.warning(
            "%s answered %s with field %s %s; read tolerantly (counted in "
            "gateway_upstream_contract_drift_total, logged once per process)",
            drift.provider.label,
            drift.endpoint,
            drift.field,
            _DESCRIPTIONS[drift.kind],
            # Top-level keys of a JSON log line (`telemetry.logs`), for alerts to match on.
            extra={
                "access": {
                    "provider": provider,
                    "endpoint": drift.endpoint,
                    "field": drift.field,
                    "kind": drift.kind.value,
                }
            },
        )


_DESCRIPTIONS = {
    DriftKind.MISSING: "missing",
    DriftKind.MALFORMED: "malformed",
    DriftKind.UNKNOWN_VALUE: "holding a value the gateway does not know",
}
