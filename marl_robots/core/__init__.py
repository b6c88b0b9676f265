"""ROS-free shared vocabulary: registry, strict config, neighbour graph, paths, math."""
