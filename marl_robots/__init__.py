"""marl_robots: multi-robot sim-to-real stack.

Subpackages, in dependency order (``core`` <- ``sim``, ``controllers`` <- ``policies`` <-
``nodes``, ``hardware``, ``cli``).  Only ``nodes`` (and later ``hardware``) import ROS.
"""

__version__ = "0.1.0"
