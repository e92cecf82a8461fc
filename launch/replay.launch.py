"""Replay a scenario bag into a running dynofa_ros graph, recording the graph's outputs.

    ros2 launch dynofa_ros replay.launch.py bag:=/data/scenario_demo out:=/data/run1 rate:=1.0
    ros2 launch dynofa_ros dynofa.launch.py platform:=generic_cpu   # the graph, in another terminal

Starts the package's ``dynofa-replay`` (works without ``ros2 bag play``) and ``dynofa-record`` executables; the command
lines come from ``dynofa_ros.launch_config.replay_specs`` so ``scripts/run_graph.py`` and the tests use
the same ones. On a robot with rosbag2, ``ros2 bag play`` plays the same bags.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dynofa_ros import launch_config as lc
from launch import LaunchDescription


def _nodes(context, *_args, **_kwargs):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in lc.REPLAY_ARGUMENTS}
    return [
        Node(package=s.package, executable=s.executable, name=s.name, namespace=s.namespace or None,
             arguments=list(s.arguments), output="screen")
        for s in lc.replay_specs(lc.ReplayArgs.from_strings(values))
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
         for a in lc.REPLAY_ARGUMENTS]
        + [OpaqueFunction(function=_nodes)]
    )
