"""A client of ``ovs_map_node`` in this process: its latched outputs and its vocabulary.

Subscribes transient-local (as a late RViz would) to ``/cns/ovs/labeled_points`` and
``/cns/class_names`` and calls ``/cns_ovs_map/set_parameters`` to change the node's
``vocabulary``. Own rclpy context, no signal handlers (the caller's Ctrl-C stays a
KeyboardInterrupt). Used by ``offline_training/demo_ovs3d.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String

from cns_ros.ovs3d.labeled_map import CLASS_NAMES_TOPIC, LABELED_POINTS_TOPIC

__all__ = ['OvsMapClient']


class OvsMapClient:
    """Collects the node's clouds and class lists; sets its vocabulary.

    Attributes:
        clouds: Every PointCloud2 received, in order.
        names: Every class list received (``[{'id', 'name', 'color'}, ...]``), in order.
    """

    def __init__(self, node_name: str = 'cns_ovs_map', client_name: str = 'cns_ovs_client'
                 ) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(client_name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.clouds: list[PointCloud2] = []
        self.names: list[list[dict[str, Any]]] = []
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(PointCloud2, LABELED_POINTS_TOPIC, self.clouds.append,
                                      latched)
        self.node.create_subscription(String, CLASS_NAMES_TOPIC,
                                      lambda m: self.names.append(json.loads(m.data)), latched)
        self._set = self.node.create_client(SetParameters, f'/{node_name}/set_parameters')

    def __enter__(self) -> OvsMapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def service_ready(self) -> bool:
        """Whether the node's set_parameters service is there."""
        return self._set.service_is_ready()

    def spin_until(self, done: Callable[[], bool], timeout: float,
                   abort: Callable[[], None] | None = None) -> bool:
        """Spin until ``done()`` or ``timeout`` s; ``abort()`` is called between spins (it may
        raise, e.g. when the node's process ended). Returns ``done()``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            if abort is not None:
                abort()
            self.executor.spin_once(timeout_sec=0.02)
        return bool(done())

    def set_vocabulary(self, entries: list[str], timeout: float = 20.0,
                       abort: Callable[[], None] | None = None) -> tuple[bool, str]:
        """Request ``vocabulary := entries``; (successful, reason).

        Raises:
            TimeoutError: No answer within ``timeout`` s.
        """
        param = Parameter('vocabulary', Parameter.Type.STRING_ARRAY, list(entries))
        future = self._set.call_async(SetParameters.Request(parameters=[param.to_parameter_msg()]))
        if not self.spin_until(future.done, timeout, abort):
            raise TimeoutError(f'set_parameters vocabulary={entries}: no answer within '
                               f'{timeout:.0f} s')
        result = future.result().results[0]
        return bool(result.successful), str(result.reason)

    def close(self) -> None:
        """Destroy the node and shut the context down."""
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
