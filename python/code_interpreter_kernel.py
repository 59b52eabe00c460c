"""The kernel every sandbox runs: `python -m code_interpreter_kernel -f CONNECTION_FILE [ipykernel options]`.

ipykernel's kernel (installed into the kernel env by setup_env.py), without two parts the gateway never uses:

- the shell-channel thread, which only exists to route messages to kernel subshells (the gateway never opens one):
  without it ipykernel serves the shell socket on the main thread's event loop, so each request crosses one thread
  less, and each kernel starts one thread and one event loop less;
- the heartbeat, a thread with a ZeroMQ context of its own (two more threads): the gateway watches the kernel's
  process and its replies, never its heartbeat.

Both launchers start this module (the zygote imports it before forking), so that their kernels stay alike.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # As `python -m ipykernel_launcher` does: the working directory (the user's files) is not on sys.path while
    # the kernel's modules load; IPython's InteractiveShellApp.init_path puts it back.
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]

from ipykernel.kernelapp import IPKernelApp  # noqa: E402 (after the sys.path change above)
from traitlets import List, Unicode  # noqa: E402


class KernelApp(IPKernelApp):
    """IPKernelApp without the shell-channel thread and the heartbeat (see the module's docstring)."""

    # IPython's own default extension by its full name: IPython looks for a top-level `storemagic` module first
    # (~0.8 ms of failed lookups along sys.path in every kernel) before loading this one, under this name.
    default_extensions = List(Unicode(), ["IPython.extensions.storemagic"]).tag(config=False)

    def init_control(self, context):
        super().init_control(context)
        # Created there with an event loop of its own, which is closed unused.
        unused, self.shell_channel_thread = self.shell_channel_thread, None
        if unused is not None:
            unused.io_loop.close()

    def init_heartbeat(self):
        """No heartbeat: nothing listens on the connection file's `hb_port`."""


if __name__ == "__main__":
    KernelApp.launch_instance()
