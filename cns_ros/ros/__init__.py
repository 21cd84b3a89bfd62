"""ROS 2 nodes: the only modules of cns_ros that import rclpy (replay_node, segment_node, sync)."""
