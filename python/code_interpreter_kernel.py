"""The kernel every sandbox runs: `python -m code_interpreter_kernel -f CONNECTION_FILE [ipykernel options]`.

ipykernel's kernel (installed into the kernel env by setup_env.py), without three parts the gateway never uses:

- the shell-channel thread, which only exists to route messages to kernel subshells (the gateway never opens one):
  without it ipykernel serves the shell socket on the main thread's event loop, so each request crosses one thread
  less, and each kernel starts one thread and one event loop less;
- the heartbeat, a thread with a ZeroMQ context of its own (two more threads): the gateway watches the kernel's
  process and its replies, never its heartbeat;
- the debugger, which serves Jupyter frontends' `debug_request`s (the gateway sends none): without it no debugpy is
  loaded for the kernel (~120 modules, 6 MB more in the zygote), and no socket of its own is made or connected to
  the shell socket. The kernel says `debugger: false` in its kernel info; user code may still import debugpy.

It also skips two things a kernel does for the terminal that started it, which here is the gateway: rewriting the
connection file (the gateway's names every port) and printing how to connect another client to it.

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
from ipykernel.control import ControlThread  # noqa: E402
from ipykernel.kernelapp import IPKernelApp  # noqa: E402
from traitlets import List, Unicode  # noqa: E402


class KernelApp(IPKernelApp):
    """IPKernelApp without the shell-channel thread, the heartbeat and the debugger (see the module's docstring)."""

    # IPython's own default extension by its full name: IPython looks for a top-level `storemagic` module first
    # (~0.8 ms of failed lookups along sys.path in every kernel) before loading this one, under this name.
    default_extensions = List(Unicode(), ["IPython.extensions.storemagic"]).tag(config=False)

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
