"""Minimal ``ros2 launch <file> name:=value ...`` for machines with ``launch`` but no ros2cli.

Used by test_launch.py as a separate process, so SIGINT handling is the launch service's own.
"""

import sys

from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

from launch import LaunchDescription, LaunchService


def main(argv: list[str]) -> int:
    """Run ``argv[0]`` with ``name:=value`` launch arguments; return the service's code."""
    path, pairs = argv[0], [a.split(":=", 1) for a in argv[1:]]
    service = LaunchService()
    service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(path), launch_arguments=[tuple(p) for p in pairs])]))
    return service.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
