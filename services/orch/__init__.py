"""A bounded pool of concurrent workers running Jobs. It knows nothing of payments."""

from services.orch.orchestrator import Job, Limits, Orchestrator, PoolStats

__all__ = ["Job", "Limits", "Orchestrator", "PoolStats"]
