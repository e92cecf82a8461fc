"""perception_lifecycle_node: the perception node as a managed (lifecycle) node, same code as the plain one.

Why both: robot integrators drive heavy models through lifecycle transitions (load at configure,
free at cleanup) while quick experiments want a node that just runs (STYLE.md #17). Transitions map
onto :class:`~dynofa_ros.nodes.perception_node.PerceptionRuntime`:

- configure: parameters checked, family loaded, every level prepared (synchronously). A bad family,
  weights file or device fails the transition with the reason logged; the node stays unconfigured
  and alive, and configuration parameters may be corrected (``set_parameters``) and configure retried.
- activate: subscriptions and publishers created; results flow.
- deactivate: subscriptions and publishers destroyed; the model stays loaded (re-activation is instant).
- cleanup: the worker stops and the model is freed, with the CUDA cache and glibc's heap.
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from ..problems import ConfigError
from .perception_node import PerceptionRuntime, run


class PerceptionLifecycleNode(LifecycleNode):
    """Managed perception node; start it, then drive it with the standard lifecycle services."""

    def __init__(self) -> None:
        super().__init__("perception_lifecycle_node")
        self.runtime = PerceptionRuntime(self, settable_when_unconfigured=True)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.runtime.configure(background=False)
        except ConfigError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self.runtime.cleanup()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runtime.activate()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runtime.deactivate()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runtime.cleanup()
        self.get_logger().info("model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runtime.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error during a transition from {state.label}; freeing the model")
        self.runtime.cleanup()
        return TransitionCallbackReturn.SUCCESS


def main(args: Any = None) -> int:
    return run(PerceptionLifecycleNode)


if __name__ == "__main__":
    sys.exit(main())
