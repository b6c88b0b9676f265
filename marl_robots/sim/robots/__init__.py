"""Robot models, one file each, looked up by name through ``ROBOTS``."""

from marl_robots.core.registry import Registry

ROBOTS = Registry("robot")
ROBOTS.register("single_integrator", "marl_robots.sim.robots.single_integrator:SingleIntegrator")
ROBOTS.register("unicycle", "marl_robots.sim.robots.unicycle:Unicycle")
