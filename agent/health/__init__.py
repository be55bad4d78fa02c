"""Health metrics: host, agent and camera figures, and their OpenMetrics exposition."""

from agent.health.collector import HealthCollector
from agent.health.loop_lag import LoopLag
from agent.health.openmetrics import CONTENT_TYPE, render
from agent.health.system import SystemPaths, SystemSampler

__all__ = ["CONTENT_TYPE", "HealthCollector", "LoopLag", "SystemPaths", "SystemSampler", "render"]
