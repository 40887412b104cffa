"""Compiled execution: each hot operation runs from a plan made once for it (`plan.py`), kept in a
bounded cache (`cache.py`), by Strawberry's own executor class specialized to run plans
(`executor.py`), which a schema takes as its execution context class. Strawberry stays the
definition of the schema, its validation and introspection, and the executor of whatever has no
plan.
"""

from gateway.execution.cache import PlanCache
from gateway.execution.executor import PlannedExecutor, planned_executor

__all__ = ["PlanCache", "PlannedExecutor", "planned_executor"]
