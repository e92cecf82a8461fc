"""dynofa_ros: Dynamic-OFA runtime sub-network switching and DVFS for ROS 2.

Layers (docs/ARCHITECTURE.md): ``inference``, ``perception`` and ``control`` run on the robot and never import
rclpy; ``offline`` and ``replay`` are workstation tooling; ``nodes`` and ``tools`` are the only ROS adapters.
``test/test_import_rules.py`` checks these arrows.
"""
