"""dynofa_ros: Dynamic-OFA runtime sub-network switching and DVFS for ROS 2.

The modules directly under this package never import rclpy: they hold every decision and
computation, so they can be tested and reused without ROS. ROS adapters live in ``nodes/``.
"""
