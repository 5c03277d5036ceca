"""A bounded pool of concurrent workers running Jobs. It knows nothing of payments."""

from services.orch.orchestrator import Job, Orchestrator, OrchestratorLimits, PoolStats

__all__ = ["Job", "OrchestratorLimits", "Orchestrator", "PoolStats"]
