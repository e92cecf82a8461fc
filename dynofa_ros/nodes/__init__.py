"""Thin rclpy adapters: each module is one node executable with a ``main()``; decisions live in the core."""
