"""Scheduling: match ready tasks to waiting workers. Pure: it decides, the service proposes."""

from dtf_coordinator.scheduling.planner import Placement, Planner

__all__ = ["Placement", "Planner"]
