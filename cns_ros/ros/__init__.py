"""ROS 2 nodes (replay_node, segment_node, record_node) and their helpers: the only modules of
cns_ros that import rclpy."""
