"""The kernel every sandbox runs: `python -m code_interpreter_kernel -f CONNECTION_FILE [ipykernel options]`.

ipykernel's kernel (installed into the kernel env by setup_env.py), without three parts the gateway never uses:

- the shell-channel thread, which only exists to route messages to kernel subshells (the gateway never opens one):
  without it ipykernel serves the shell socket on the main thread's event loop, so each request crosses one thread
  less, and each kernel starts one thread and one event loop less;
- the heartbeat, a thread with a ZeroMQ context of its own (two more threads): the gateway watches the kernel's
  process and its replies, never its heartbeat;
- the debugger, which serves Jupyter frontends' `debug_request`s (the gateway sends none): without it no debugpy is
  loaded for the kernel (~120 modules, 6 MB more in the zygote), no socket of its own is made or connected to the
  shell socket, and nothing waits for its events (see `Kernel`). The kernel says `debugger: false` in its kernel
  info; user code may still import debugpy.

It also skips two things a kernel does for the terminal that started it, which here is the gateway: rewriting the
connection file (the gateway's names every port) and printing how to connect another client to it. And it spares
work that changes nothing a client sees: flushing an output stream that holds nothing (see `OutStream`), and making
log records that no handler takes (see `KernelApp.get_default_logging_config`).

Both launchers start this module (the zygote imports it first, before any of ipykernel), so that their kernels
stay alike.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # As `python -m ipykernel_launcher` does: the working directory (the user's files) is not on sys.path while
    # the kernel's modules load; IPython's InteractiveShellApp.init_path puts it back.
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]

# ipykernel.debugger imports debugpy to see whether it can debug: here it finds none.
_debugpy_blocked = "debugpy" not in sys.modules
if _debugpy_blocked:
    sys.modules["debugpy"] = None
import ipykernel.debugger  # noqa: E402 (after the two changes above)

if _debugpy_blocked:
    del sys.modules["debugpy"]
ipykernel.debugger._is_debugpy_available = False

import zmq  # noqa: E402
from ipykernel import iostream  # noqa: E402
from ipykernel.control import ControlThread  # noqa: E402
from ipykernel.ipkernel import IPythonKernel  # noqa: E402
from ipykernel.kernelapp import IPKernelApp  # noqa: E402
from ipykernel.kernelbase import Kernel as KernelBase  # noqa: E402
from traitlets import DottedObjectName, List, Type, Unicode  # noqa: E402


class Kernel(IPythonKernel):
    """IPythonKernel without the debugger's part of `start` (there is no debugger, see the module's docstring): no
    handler on the debugger's socket, and no coroutine on the control thread awaiting the debugger's stopped events,
    which would only fail there at its first step."""

    def start(self):
        if self.shell:
            self.shell.exit_now = False
        KernelBase.start(self)


class OutStream(iostream.OutStream):
    """ipykernel's stdout/stderr, except that flushing one that holds nothing returns at once. ipykernel would still
    hand two callbacks to the IOPub thread and wait until both ran (a round trip between threads, each waking the
    other): at the end of every execution for both streams, mostly for stderr with nothing in it, and four times
    while the kernel starts. What was written is sent, and in order, exactly as before: a write goes into the
    buffers before it schedules its own flush, and everything a stream sends goes through the IOPub thread's queue."""

    def flush(self):
        if self.echo is None and not self._buffers:
            return
        super().flush()


class KernelApp(IPKernelApp):
    """IPKernelApp without the shell-channel thread, the heartbeat and the debugger (see the module's docstring)."""

    # IPython's own default extension by its full name: IPython looks for a top-level `storemagic` module first
    # (~0.8 ms of failed lookups along sys.path in every kernel) before loading this one, under this name.
    default_extensions = List(Unicode(), ["IPython.extensions.storemagic"]).tag(config=False)
    kernel_class = Type(Kernel, klass=KernelBase).tag(config=True)
    # This module's stream (`__main__.OutStream` under `python -m`, where this module is `__main__`).
    outstream_class = DottedObjectName(f"{__name__}.OutStream").tag(config=True)

    def get_default_logging_config(self):
        """traitlets' logging config, with the application's logger at its console handler's level instead of
        DEBUG: every `log.debug` in ipykernel (three for each message it handles) would make a record that handler
        then drops. Left as traitlets has it when `logging_config` is set (its handlers may want more)."""
        config = super().get_default_logging_config()
        logger = config.get("loggers", {}).get(type(self).__name__)
        if logger is not None and not self.logging_config:
            logger["level"] = config["handlers"]["console"]["level"]
        return config

    def init_control(self, context):
        """IPKernelApp's, without the debugger's two sockets and the shell-channel thread."""
        self.control_socket = context.socket(zmq.ROUTER)
        self.control_socket.linger = 1000
        self._apply_curve_server_options(self.control_socket)
        self.control_port = self._bind_socket(self.control_socket, self.control_port)
        self.control_socket.router_handover = 1
        # Neither bound nor connected: `init_kernel` makes a stream of it for the debugger, which never comes.
        self.debugpy_socket = context.socket(zmq.STREAM)
        self.control_thread = ControlThread(daemon=True)
        self.shell_channel_thread = None

    def init_heartbeat(self):
        """No heartbeat: nothing listens on the connection file's `hb_port`."""

    def write_connection_file(self, **kwargs):
        """Nothing to add: the gateway's connection file already names every port (ipykernel would read it back,
        compare, and leave it as it is)."""

    def log_connection_info(self):
        """Only records the ports (the reply to `connect_request`): no "To connect another client..." in the
        sandbox's log, where nobody can use it."""
        self._ports = dict(
            shell=self.shell_port,
            iopub=self.iopub_port,
            stdin=self.stdin_port,
            hb=self.hb_port,
            control=self.control_port,
        )


if __name__ == "__main__":
    KernelApp.launch_instance()
