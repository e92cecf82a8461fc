"""Start dynofa_ros on a robot: perception + runtime manager, optional DVFS and monitor nodes.

    ros2 launch dynofa_ros dynofa.launch.py platform:=xavier_nx camera_topic:=/camera/color/image_raw
    ros2 launch dynofa_ros dynofa.launch.py platform:=orin bundle:=/data/bundle_orin namespace:=robot1
    ros2 launch dynofa_ros dynofa.launch.py --show-args

Thin on purpose: every decision (which params file for the platform, which overrides and remaps, which
nodes, the configuration checks made before any node starts, and why no node is respawned) is made by
``dynofa_ros.launch_config.node_specs``, which the tests exercise where ``launch_ros`` is not installable;
this file only turns its answer into ``Node`` actions. A launch argument left unset overrides nothing:
the params file's value stands.
"""

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dynofa_ros import launch_config as lc
from launch import LaunchDescription


def _nodes(context, *_args, **_kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in lc.ARGUMENT_NAMES}
    args = lc.LaunchArgs.from_strings(values)
    share = get_package_share_directory(lc.PACKAGE)
    return [
        Node(package=s.package, executable=s.executable, name=s.name, namespace=s.namespace or None,
             parameters=[*s.params_files, s.overrides], remappings=list(s.remaps), respawn=s.respawn,
             respawn_delay=s.respawn_delay, output="screen", emulate_tty=True)
        for s in lc.node_specs(args, share)
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in lc.ARGUMENTS]
        + [OpaqueFunction(function=_nodes)]
    )
