"""The zygote's Python side, run in `__main__` of the embedded interpreter (crates/zygote).

`preload(config)` runs once in the zygote: it imports everything a kernel needs, parses the kernels' command
line, creates their IPython shell, and freezes the heap, so that the sandboxes forked from it share those pages
copy-on-write. `start(request)` runs in each sandbox, after the fork and after the sandbox's walls are up: it
becomes that session's kernel exactly as `python -m code_interpreter_kernel ARGS` would. No thread may run and no
ZeroMQ context may be open at the fork: threads do not survive it (`rehearse` ends those it starts).
"""

import atexit
import contextlib
import datetime
import gc
import glob
import importlib
import json
import os
import pathlib
import shutil
import sys

# The kernel's own modules: what it imports to start (their files are the list its debugger would be given, see
# `_kernel_modules`).
KERNEL_PRELOAD = (
    "code_interpreter_kernel",
    "IPython",
    "IPython.core.interactiveshell",
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.iostream",
    "ipykernel.comm",
    "jupyter_client.session",
    # Reading the connection file asks for the host's addresses, which imports psutil (~7 ms in every kernel).
    "jupyter_client.localinterfaces",
    "psutil",
)
# What the kernel's start imports after these, and what users import first. Not matplotlib_inline's backend: it
# hooks into the shell when imported, which must happen in the kernel (at its first plot, as without a zygote).
PRELOAD = (
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.logger",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "IPython.utils.wildcard",
    "tornado.gen",
    "tornado.locks",
    "tornado.queues",
    "tornado.platform.asyncio",
    "sqlite3",
    "pdb",
    "pydoc",
    "faulthandler",
    "mimetypes",
    "http.server",
    "xmlrpc.server",
    "numpy",
    "pandas",
    "matplotlib",
    "matplotlib.pyplot",
    "matplotlib.backends.backend_agg",
)


def preload(config_bytes):
    # No collection while importing: it would leave holes in pages that the kernels' first allocations would
    # then fill, copying those pages; and `freeze` keeps later collections off the imported objects.
    gc.disable()
    config = json.loads(config_bytes)
    if sys.prefix != config["prefix"]:
        raise SystemExit(f"zygote: sys.prefix is {sys.prefix!r}, expected the kernel env {config['prefix']!r}")
    # matplotlib's prebuilt font list goes where MPLCONFIGDIR points, so importing it does not scan the fonts.
    mpl_dir = os.environ.get("MPLCONFIGDIR")
    if mpl_dir:
        os.makedirs(mpl_dir, exist_ok=True)
        for cached in glob.glob(os.path.join(config["font_cache"], "fontlist-*.json")):
            shutil.copy(cached, mpl_dir)
    before = dict(os.environ)
    for name in KERNEL_PRELOAD:
        importlib.import_module(name)
    # The kernel's own modules, as IPythonKernel lists them for its debugger (see `initialize`): those a kernel
    # has when it starts, not the libraries preloaded for its users.
    _kernel_modules.extend(m.__file__ for m in sys.modules.copy().values() if getattr(m, "__file__", None))
    for name in PRELOAD:
        importlib.import_module(name)
    prepare_app(config["kernel_args"])
    # What importing set in the environment, if anything: a kernel importing the same modules itself would have it
    # too.
    _set_by_imports.update({k: v for k, v in os.environ.items() if before.get(k) != v})
    prepare_shell()
    rehearse()
    _module_names.update(sys.modules)


def freeze():
    """Everything preloaded lives for good: keeps the collector off those pages, so they stay shared. (The zygote
    calls it after `preload`, once it has made those objects immortal where CPython has such objects.)"""
    gc.freeze()


# Files of the kernel's own modules (see `preload`).
_kernel_modules = []
# Environment variables the preloaded modules set when imported.
_set_by_imports = {}
# The names in sys.modules when preloading ended (see `initialize`).
_module_names = set()
# The kernel application, configured from the kernels' command line before the fork; and that command line.
_app = None
_app_args = None


def prepare_app(args):
    """Does the part of the kernel's start that is the same for every kernel and needs neither a thread nor a
    ZeroMQ context: parsing the command line and the configuration (IPython's application initialize)."""
    global _app, _app_args
    from code_interpreter_kernel import KernelApp
    from IPython.core.application import BaseIPythonApplication

    _app = KernelApp.instance()
    BaseIPythonApplication.initialize(_app, args)
    _app_args = list(args)


def prepare_shell():
    """Creates the kernel's shell (IPython's InteractiveShell: its magics, completer, history, formatters; ~8 ms
    and ~600 page faults in every kernel otherwise) before the fork. The kernel's `shell_class.instance(...)`
    then finds it; `adopt_shell` gives it what belongs to the kernel's process: the kernel, the streams, the cwd,
    the environment, `__main__`."""
    from ipykernel.ipkernel import IPythonKernel
    from ipykernel.zmqshell import ZMQInteractiveShell

    traits = IPythonKernel.class_traits()
    if traits["shell_class"].default_value is not ZMQInteractiveShell:
        return
    # A history in a file has a thread saving it, which the zygote must not start (see the module's docstring).
    if _app.config.HistoryManager.get("hist_file") != ":memory:":
        return
    zygote_main, environ = sys.modules["__main__"], dict(os.environ)
    shell = ZMQInteractiveShell.instance(
        parent=_app,
        profile_dir=_app.profile_dir,
        user_module=None,
        user_ns=_app.user_ns,
        kernel=None,
        compiler_class=traits["compiler_class"].default_value,
    )
    # Its extensions (IPython's storemagic) register magics on the shell, the same in every kernel: loaded here, the
    # kernel's `init_extensions` finds them loaded. One that fails is left to the kernel, which reports it.
    for name in _app.default_extensions + _app.extensions + _app.extra_extensions:
        try:
            shell.extension_manager.load_extension(name)
        except Exception:
            pass
    # The zygote keeps its own `__main__`, environment and exit: the kernel takes these back in `adopt_shell`.
    sys.modules["__main__"] = zygote_main
    os.environ.clear()
    os.environ.update(environ)
    atexit.unregister(shell.atexit_operations)


def rehearse(rounds=12):
    """Runs, on throwaway objects, the library code every kernel runs while it starts and answers its first
    request: ZeroMQ sockets, an IOPub thread publishing a stream's output, asyncio and tornado loops, a
    jupyter_client Session signing and parsing a message, IPython's input transformation. What that code
    fills in on first use (CPython's method cache and specialized bytecode, compiled regular expressions, lazily
    made module state) is then there before the fork, instead of being redone by every kernel on pages it must first
    copy (measured: 2-3 ms less CPU per kernel start, ~10 %). Leaves nothing behind, even when it fails: every
    socket, thread, loop and context it makes is closed, joined or terminated before it returns, and it registers
    nothing anywhere. Only a warm-up: if it fails, kernels start without it."""
    try:
        # IPython's start globs the profile's startup directory for "*.py" and "*.ipy" files: fnmatch compiles
        # (and keeps) each pattern's regular expression at its first use.
        import fnmatch

        for pattern in ("*.py", "*.ipy"):
            fnmatch.filter(("00-first.py", "00-first.ipy"), pattern)
        for round in range(rounds):
            with contextlib.ExitStack() as ends:
                _rehearse_round(round, ends)
        # Its threads have ended, but their objects stay in threading's set of threads not yet collected (the IOPub
        # thread's is in a reference cycle, and the collector is off): every fork would reset each of them again.
        import threading

        for thread in list(threading._dangling):
            if not thread.is_alive():
                threading._dangling.discard(thread)
    except Exception:
        import traceback

        print("zygote: rehearsing a kernel's start failed; kernels start without it:", file=sys.stderr)
        traceback.print_exc()


def _rehearse_round(round, ends):
    """One round of `rehearse`; `ends` ends what it started, last started first."""
    import asyncio
    import inspect
    import threading

    import zmq
    from ipykernel.iostream import IOPubThread, OutStream
    from ipykernel.ipkernel import IPythonKernel
    from ipykernel.zmqshell import ZMQInteractiveShell
    from jupyter_client.session import Session
    from tornado.ioloop import IOLoop

    session = Session(key=b"rehearsal")
    message = session.msg("execute_request", content={"code": "x = 1; print(x)", "silent": False})
    _, frames = session.feed_identities(session.serialize(message, ident=[b"ident"]))
    session.deserialize(frames)
    shell = ZMQInteractiveShell._instance
    if shell is not None:
        shell.transform_cell("x = 1; print(x)\n")
    context = zmq.Context()
    ends.callback(context.term)
    for n, kind in enumerate((zmq.ROUTER, zmq.ROUTER, zmq.XPUB, zmq.ROUTER, zmq.PULL)):
        with context.socket(kind) as socket:
            socket.linger = 1000
            socket.bind(f"inproc://rehearsal-{round}-{n}")
            socket.getsockopt(zmq.LAST_ENDPOINT)
    # The IOPub thread and a stream on it, as the kernel's print sends its output.
    iopub = context.socket(zmq.XPUB)
    ends.callback(iopub.close)
    iopub.linger = 0
    iopub.bind(f"inproc://rehearsal-{round}-iopub")
    publisher = IOPubThread(iopub)
    publisher.start()
    ends.callback(atexit.unregister, publisher.stop)
    ends.callback(publisher.close)
    ends.callback(publisher.stop)
    stream = OutStream(session, publisher, "stdout", watchfd=False)
    stream.write("1\n")
    stream.flush()
    loop = asyncio.new_event_loop()
    ends.callback(loop.close)
    loop.run_until_complete(asyncio.sleep(0))
    IOLoop(make_current=False).close(all_fds=True)
    started = threading.Event()
    thread = threading.Thread(target=started.set, daemon=True)
    thread.start()
    started.wait()
    thread.join()
    threading.Condition(threading.Lock())
    inspect.signature(IPythonKernel.do_execute)
    path = pathlib.Path("/nonexistent/kernel.json")
    path.exists(), path.name, str(path.parent)


def adopt_shell(shell):
    """Does in the kernel what creating `shell` did to its process before the fork (see `prepare_shell`), and
    returns the `instance` classmethod's stand-in through which the kernel, asking for its shell, gets this one."""
    from IPython.utils.path import get_home_dir

    shell.init_environment()
    launcher_main = sys.modules.get("__main__")
    shell.init_sys_modules()
    shell.home_dir = get_home_dir()
    shell.starting_dir = os.getcwd()
    history = shell.history_manager
    history.dir_hist[:] = [pathlib.Path.cwd()]
    if history.enabled:
        # The session began when the kernel did, as `HistoryManager.new_session` would have written it.
        with history.db:
            history.db.execute(
                "UPDATE sessions SET start=? WHERE session=?",
                (datetime.datetime.now().isoformat(" "), history.session_number),
            )
    def instance(*args, **kwargs):
        # What the shell's __init__ would have taken from the kernel and its process at this point.
        shell.parent = kwargs.get("parent")
        shell.kernel = kwargs.get("kernel")
        shell.save_sys_module_state()
        shell._orig_sys_modules_main_mod = launcher_main
        atexit.register(shell.atexit_operations)
        return shell

    return instance


def initialize(app, args):
    """The rest of IPKernelApp.initialize(args), in the kernel: sockets, threads, the shell."""
    from IPython.core import shellapp
    from IPython.core.application import BaseIPythonApplication
    from ipykernel import ipkernel
    from ipykernel.zmqshell import ZMQInteractiveShell

    # The profile directory was made in the zygote's home; the kernel's home is a fresh one, where the sandbox
    # normally made it too (then without `makedirs`' failed `mkdir` and its exception: ~0.2 ms).
    if not os.path.isdir(app.profile_dir.location):
        os.makedirs(app.profile_dir.location, exist_ok=True)
    app.profile_dir.check_dirs()
    patches = [
        # Done in the zygote (`prepare_app`).
        (BaseIPythonApplication, "initialize", lambda self, argv=None: None),
        # IPythonKernel.__init__ lists the files of every imported module (`sys.modules.copy()`), ~1300 of them
        # here: walking them costs milliseconds and copies every page it touches. Its module sees a `sys` whose
        # `modules.copy()` is empty; the list made in the zygote is put in its place afterwards.
        (ipkernel, "sys", _SysWithoutModules()),
    ]
    # The same for the shell's `_sys_modules_keys` (the modules `%reset --aggressive` keeps), a set of every
    # module's name made in IPython's shellapp: while no module came or went since preloading (a kernel only
    # imports preloaded ones before this), the zygote's set is that set, and no page of theirs gets copied.
    names_unchanged = len(sys.modules) == len(_module_names)
    if names_unchanged:
        patches.append((shellapp, "sys", _SysWithoutModules()))
    shell = ZMQInteractiveShell._instance
    if shell is not None:
        patches.append((ZMQInteractiveShell, "instance", adopt_shell(shell)))
    with _patched(patches):
        app.initialize(args)
    if names_unchanged:
        app.shell._sys_modules_keys = _module_names
    app.kernel._kernel_modules = _kernel_modules


@contextlib.contextmanager
def _patched(patches):
    """Sets each `(owner, name, value)` for the duration of the block, then puts back what the owner had (an
    attribute it only inherited is removed again)."""
    saved = []
    try:
        for owner, name, value in patches:
            saved.append((owner, name, vars(owner).get(name, _MISSING)))
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in reversed(saved):
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


_MISSING = object()


class _SysWithoutModules:
    """`sys`, except that `modules.copy()` and `modules.keys()` are empty (for the modules of ipykernel and IPython
    that walk every module while the kernel is created)."""

    class _NoModules:
        def copy(self):
            return {}

        def keys(self):
            return ()

    modules = _NoModules()

    def __getattr__(self, name):
        return getattr(sys, name)

    def __setattr__(self, name, value):
        # shellapp sets `sys.argv` around the startup files it runs: that must reach the real `sys`.
        setattr(sys, name, value)


def start(request_bytes):
    request = json.loads(request_bytes)
    argv = request["argv"]
    if argv[1:3] != ["-m", "code_interpreter_kernel"]:
        raise SystemExit(f"zygote: can only start `python -m code_interpreter_kernel ...`, not {argv!r}")
    # Exactly the policy's environment, as an exec would have given it, plus what the imports add.
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update(_set_by_imports)
    gc.enable()
    # Where the kernel's temporary files go (ipykernel puts each cell's code there): its TMPDIR, if it can write
    # there, without `gettempdir`'s first-call test of creating a file there (otherwise that test picks one).
    import tempfile

    tmpdir = os.environ.get("TMPDIR")
    tempfile.tempdir = tmpdir if tmpdir and os.path.isdir(tmpdir) and os.access(tmpdir, os.W_OK | os.X_OK) else None
    # Every fork starts with the zygote's generator states: numpy's legacy generator gets a fresh state, 624 words
    # straight from the kernel's entropy (`seed()` would expand a 128-bit seed into them through a SeedSequence: twice
    # the time and ~70 more page faults per kernel); position 624 makes its first draw mix them, as `seed(n)` leaves it.
    # (`random` reseeds itself after a fork, in `PyOS_AfterFork_Child`.)
    import numpy

    numpy.random.set_state(("MT19937", numpy.frombuffer(os.urandom(624 * 4), dtype=numpy.uint32), 624))

    import code_interpreter_kernel

    KernelApp = code_interpreter_kernel.KernelApp
    args = argv[3:]
    sys.argv = [code_interpreter_kernel.__file__, *args]
    if _app is not None and args == _app_args:
        initialize(_app, args)
        app = _app
    else:
        # Another command line than the one prepared for: start from scratch.
        from ipykernel.zmqshell import ZMQInteractiveShell

        KernelApp.clear_instance()
        ZMQInteractiveShell.clear_instance()
        app = KernelApp.instance()
        app.initialize(args)
    app.start()
