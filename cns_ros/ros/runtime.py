"""The process side of the cns_ros node executables: rclpy start, spin, signals, shutdown.

:func:`run_node` is the body of a node's ``main()``: it initializes rclpy, builds the node, runs
it in one of two ways, and always shuts down in the same order (stop spinning, ``on_exit``,
executor, node, rclpy). It returns the process exit code: :data:`EXIT_OK` (0) after the end of
the work, Ctrl-C, SIGTERM or a launch shutdown; :data:`EXIT_ERROR` (1) after one error line for
an expected start-up error (bad parameter, bundle, bag...).

* **Spin until a signal** (``work=None``, e.g. ``segment_node``, ``record_node``): rclpy
  installs no signal handler; during start-up SIGINT and SIGTERM raise KeyboardInterrupt
  (loading can be cut at once), afterwards they only set a stop event
  (:func:`install_stop_handlers`) and the main thread's spin loop ends (also when the node says
  it is done: ``until``), so shutdown runs in order with the context still valid (``on_exit``
  can still log to /rosout and destroy entities). A second signal raises KeyboardInterrupt, so
  a stuck shutdown can be cut.
* **Work while a thread spins** (``work=callable``, e.g. ``replay_node``): the main thread runs
  ``work(node)`` while a daemon thread serves the node's callbacks (parameter services);
  rclpy's own SIGINT / SIGTERM handlers shut the context down, which the work observes.

:func:`shutdown` is ``rclpy.try_shutdown`` with the fallback for Humble (no ``try_shutdown``).
:func:`tune_malloc` is a glibc allocator setting for nodes with large per-message buffers.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

__all__ = ['EXIT_ERROR', 'EXIT_OK', 'error_line', 'install_stop_handlers', 'run_node',
           'shutdown', 'spin_quietly', 'spin_until', 'tune_malloc']

EXIT_OK = 0
EXIT_ERROR = 1
_SPIN_TIMEOUT_S = 0.1  # longest a spin loop takes to notice a stop request

NodeT = TypeVar('NodeT', bound=Node)


def shutdown() -> None:
    """``rclpy.try_shutdown`` where it exists (Iron+), else ``rclpy.shutdown`` if still up."""
    if hasattr(rclpy, 'try_shutdown'):
        rclpy.try_shutdown()
    elif rclpy.ok():
        rclpy.shutdown()


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT / SIGTERM set ``stop`` (the main loop then shuts down in order, with the context
    still valid); a second signal raises KeyboardInterrupt, so a stuck shutdown can be cut."""

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def spin_until(executor: SingleThreadedExecutor, stop: threading.Event,
               done: Callable[[], bool] | None = None) -> None:
    """Spin ``executor`` until ``stop`` is set, rclpy is shut down or ``done()`` returns True
    (checked at least every 0.1 s); exceptions propagate."""
    while not stop.is_set() and rclpy.ok() and not (done is not None and done()):
        executor.spin_once(timeout_sec=_SPIN_TIMEOUT_S)


def spin_quietly(executor: SingleThreadedExecutor, stop: threading.Event) -> None:
    """:func:`spin_until` for a daemon thread: returns when the context is gone (its
    ExternalShutdownException and friends end the thread silently)."""
    try:
        spin_until(executor, stop)
    except Exception:
        return


def error_line(err: BaseException) -> str:
    """The one log line of a start-up error, with a hint for integer values given to floating
    point parameters."""
    hint = ' (floating point parameters need a decimal point: 5.0)' \
        if "expecting type 'DOUBLE'" in str(err) else ''
    return f'{" ".join(str(err).split())}{hint}'


def run_node(name: str, make_node: Callable[[], NodeT], *,
             errors: tuple[type[BaseException], ...], args: list[str] | None = None,
             work: Callable[[NodeT], object] | None = None,
             on_exit: Callable[[NodeT], object] | None = None,
             until: Callable[[NodeT], bool] | None = None) -> int:
    """Run a node process to its end; returns the exit code (see the module docstring).

    Args:
        name: Logger name of the error line.
        make_node: Builds the node (after ``rclpy.init``).
        errors: Exceptions of a bad start (parameters, inputs): logged as one error line,
            exit code 1. Others propagate (a traceback).
        args: Command-line arguments for ``rclpy.init`` (None: ``sys.argv``).
        work: What the main thread does with the node while a thread spins it; None: the main
            thread spins it until SIGINT / SIGTERM.
        on_exit: Called with the node once spinning stopped and the executor is shut down,
            before the node is destroyed (stop workers, log a summary, close files).
        until: With ``work=None``: also stop spinning (exit code 0) once ``until(node)`` is
            True (a node that ends by itself, e.g. after a duration).
    """
    from rclpy.signals import SignalHandlerOptions

    if work is None:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # KeyboardInterrupt at start-up
    else:
        rclpy.init(args=args)
    node: NodeT | None = None
    code = EXIT_OK
    stop = threading.Event()
    executor = SingleThreadedExecutor()
    spinner = threading.Thread(target=spin_quietly, args=(executor, stop), daemon=True)
    try:
        node = make_node()
        executor.add_node(node)
        if work is None:
            install_stop_handlers(stop)
            spin_until(executor, stop, None if until is None else lambda: until(node))
        else:
            spinner.start()
            work(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except errors as err:
        rclpy.logging.get_logger(name).error(error_line(err))
        code = EXIT_ERROR
    finally:
        stop.set()
        if spinner.is_alive():
            spinner.join(timeout=1.0)
        executor.shutdown(timeout_sec=1.0)
        if node is not None:
            if on_exit is not None:
                on_exit(node)
            node.destroy_node()
        shutdown()
    return code


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Make glibc serve allocations below ``mmap_threshold`` bytes from the heap and keep up
    to ``trim_threshold`` bytes of freed memory (``mallopt``).

    By default glibc maps every allocation above about 128 KB-32 MB (a dynamic threshold) with
    ``mmap`` and unmaps it on free, so each sweep's arrays (a 34.6k-point sweep: ~1 MB
    messages, 0.3-1 MB tensors) are page-faulted afresh: on one CPU core that cost 1 ms in
    building the output message and 1.5 ms in voxelization per sweep. Returns False where
    ``mallopt`` is not available (not glibc).
    """
    import ctypes
    import ctypes.util

    if not sys.platform.startswith('linux'):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, mmap_threshold)) and \
        bool(mallopt(m_trim_threshold, trim_threshold))
