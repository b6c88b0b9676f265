"""Tasks, one file each, looked up by name through ``TASKS``."""

from marl_robots.core.registry import Registry

TASKS = Registry("task")
TASKS.register("navigation", "marl_robots.sim.tasks.navigation:NavigationTask")
