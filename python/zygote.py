"""The zygote's Python side, run in `__main__` of the embedded interpreter (crates/zygote).

`preload(config)` runs once in the zygote: it imports everything a kernel needs and freezes the heap, so that
the sandboxes forked from it share those pages copy-on-write. `start(request)` runs in each sandbox, after the
fork and after the sandbox's walls are up: it becomes that session's kernel exactly as
`python -m ipykernel_launcher ARGS` would. Nothing here may start a thread or create a ZeroMQ context before the
fork: threads do not survive it.
"""

import gc
import glob
import importlib
import json
import os
import shutil
import sys

# What every kernel imports while starting, and what users import first. Not matplotlib_inline's backend: it
# hooks into the shell when imported, which must happen in the kernel (at its first plot, as without a zygote).
PRELOAD = (
    "numpy",
    "pandas",
    "matplotlib",
    "matplotlib.pyplot",
    "matplotlib.backends.backend_agg",
    "IPython",
    "IPython.core.interactiveshell",
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.iostream",
    "ipykernel.comm",
    "jupyter_client.session",
)


def preload(config_bytes):
    config = json.loads(config_bytes)
    if sys.prefix != config["prefix"]:
        raise SystemExit(f"zygote: sys.prefix is {sys.prefix!r}, expected the kernel env {config['prefix']!r}")
    # matplotlib's prebuilt font list goes where MPLCONFIGDIR points, so importing it does not scan the fonts.
    mpl_dir = os.environ.get("MPLCONFIGDIR")
    if mpl_dir:
        os.makedirs(mpl_dir, exist_ok=True)
        for cached in glob.glob(os.path.join(config["font_cache"], "fontlist-*.json")):
            shutil.copy(cached, mpl_dir)
    for name in PRELOAD:
        importlib.import_module(name)
    # Everything imported so far lives for good: keep the collector off those pages, so they stay shared.
    gc.collect()
    gc.freeze()


def start(request_bytes):
    request = json.loads(request_bytes)
    argv = request["argv"]
    if argv[1:3] != ["-m", "ipykernel_launcher"]:
        raise SystemExit(f"zygote: can only start `python -m ipykernel_launcher ...`, not {argv!r}")
    # Exactly the policy's environment, as an exec would have given it.
    os.environ.clear()
    os.environ.update(request["env"])
    # Every fork starts with the zygote's generator states: draw fresh seeds from the kernel's entropy.
    import random

    import numpy

    random.seed()
    numpy.random.seed()

    import ipykernel_launcher
    from ipykernel import kernelapp

    sys.argv = [ipykernel_launcher.__file__, *argv[3:]]
    app = kernelapp.IPKernelApp.instance()
    app.initialize(argv[3:])
    app.start()
