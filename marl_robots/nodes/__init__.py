"""ROS 2 nodes (thin shells over the pure core) and their ROS-free helpers.

Only the ``*_node`` modules, ``conversions`` and ``common`` import ``rclpy`` or message
packages; ``fleet``, ``expansion`` and ``onboard`` are pure so that launch files and tests can
use them without ROS.
"""
