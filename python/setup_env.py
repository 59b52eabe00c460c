# Finishes a freshly pip-installed kernel environment (python/setup_env.py): the kernel module, CJK font,
# matplotlib font cache, relocatable scripts, smoke test. Run by crates/gateway/src/kernel_env with the venv's python:
#     <venv>/bin/python setup_env.py FINAL_ROOT
# The venv is built at a temporary path and renamed to FINAL_ROOT afterwards; it is later bind-mounted elsewhere
# (e.g. /opt/kernel-env in the sandbox), so nothing written here may depend on the venv's absolute path.
import importlib
import importlib.util
import io
import json
import os
import shutil
import stat
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path

FONT_FILE = "NotoSansCJK-Regular.ttc"
CJK_FAMILY = "Noto Sans CJK SC"
KERNEL_MODULE = "code_interpreter_kernel"
SMOKE_IMPORTS = [
    KERNEL_MODULE, "ipykernel.kernelapp", "matplotlib_inline.backend_inline", "numpy", "pandas", "scipy.optimize",
    "sklearn.linear_model", "sympy", "PIL.Image",
]


def fail(msg):
    print(f"kernel env setup: {msg}", file=sys.stderr)
    sys.exit(1)


def package_dir(name):
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        fail(f"package {name} is not installed in {sys.prefix}")
    return Path(list(spec.submodule_search_locations)[0])


def link_font():
    """Make Noto Sans CJK visible to matplotlib by linking it into mpl-data/fonts/ttf (relative link)."""
    src = package_dir("noto_cjk_sans_otc") / FONT_FILE
    if not src.is_file():
        fail(f"{src} is missing: the noto-cjk-sans-otc wheel changed its layout")
    dst_dir = package_dir("matplotlib") / "mpl-data" / "fonts" / "ttf"
    dst = dst_dir / FONT_FILE
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    try:
        dst.symlink_to(os.path.relpath(src, dst_dir))
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def build_font_cache(share):
    """Import matplotlib with an empty config dir so it writes its font list there, then render CJK text.

    The font list stores fonts under mpl-data as paths relative to matplotlib's data dir, so the file stays valid
    wherever the venv is mounted; a kernel may copy it into its own MPLCONFIGDIR to skip the rebuild."""
    if "matplotlib" in sys.modules:
        fail("matplotlib was imported before its settings were in place")
    cache = share / "mpl-cache"
    cache.mkdir(exist_ok=True)
    for old in cache.iterdir():
        old.unlink()
    os.environ["MPLCONFIGDIR"] = str(cache)
    os.environ["MATPLOTLIBRC"] = str(share / "matplotlibrc")
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    if matplotlib.rcParams["font.sans-serif"][0] != CJK_FAMILY:
        fail(f"matplotlibrc not applied: font.sans-serif is {matplotlib.rcParams['font.sans-serif']}")
    found = font_manager.findfont(font_manager.FontProperties(family=CJK_FAMILY), fallback_to_default=False)
    if Path(found).name != FONT_FILE:
        fail(f"matplotlib resolves {CJK_FAMILY!r} to {found}, not {FONT_FILE}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, ax = plt.subplots()
        ax.plot([-1, 0, 1], [1, -1, 0])
        ax.set_title("中文标签 日本語 한국어")
        fig.savefig(io.BytesIO(), format="png")
        plt.close(fig)
    glyph = [str(w.message) for w in caught if "Glyph" in str(w.message)]
    if glyph:
        fail("matplotlib cannot draw CJK text: " + "; ".join(glyph[:3]))
    lists = sorted(p.name for p in cache.glob("fontlist-*.json"))
    if not lists:
        fail(f"matplotlib wrote no font cache into {cache}")
    return lists


def relocatable_scripts(prefix, final_root):
    """Console scripts get '#!<build path>/bin/python' shebangs: make them find python next to themselves, and
    point the activate scripts at the final path."""
    old = str(prefix).encode()
    new = str(final_root).encode()
    trampoline = b"#!/bin/sh\n'''exec' \"$(dirname -- \"$0\")/python\" \"$0\" \"$@\"\n' '''\n"
    changed = 0
    for path in sorted((prefix / "bin").iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        long_form = b"#!/bin/sh\n'''exec' \"" + old + b"/bin/python"  # pip's form for shebangs over 127 bytes
        if data.startswith(b"#!" + old + b"/bin/python"):
            data = trampoline + data.split(b"\n", 1)[1]
        elif data.startswith(long_form):
            data = trampoline + data.split(b"\n", 3)[3]
        elif old in data:  # activate, activate.csh, activate.fish, Activate.ps1
            data = data.replace(old, new)
        else:
            continue
        path.write_bytes(data)
        changed += 1
    cfg = prefix / "pyvenv.cfg"
    cfg.write_bytes(cfg.read_bytes().replace(old, new))
    return changed


def readable_by_all(prefix):
    """Kernels run as unprivileged per-session uids: make everything world-readable (and directories and
    executables world-traversable/executable) whatever umask the gateway ran pip with."""
    fixed = 0
    for dirpath, dirnames, filenames in os.walk(prefix):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            mode = st.st_mode | 0o444
            if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o100:
                mode |= 0o111
            if mode != st.st_mode:
                os.chmod(path, stat.S_IMODE(mode))
                fixed += 1
    os.chmod(prefix, 0o755)
    return fixed


def install_kernel_module(share):
    """Copy the kernel every sandbox runs (share/code-interpreter/code_interpreter_kernel.py, written by the
    builder) into site-packages, so that `python -m code_interpreter_kernel` finds it."""
    source = share / f"{KERNEL_MODULE}.py"
    target = Path(sysconfig.get_paths()["purelib"]) / source.name
    shutil.copyfile(source, target)
    return str(target.relative_to(sys.prefix))


def finish(prefix, share, final_root):
    kernel = install_kernel_module(share)
    font = link_font()
    lists = build_font_cache(share)  # first: imports matplotlib with this env's settings
    for name in SMOKE_IMPORTS:
        importlib.import_module(name)
    scripts = relocatable_scripts(prefix, final_root)
    modes = readable_by_all(prefix)
    return {
        "kernel": kernel, "font": str(font.relative_to(prefix)), "font_cache": lists, "scripts_rewritten": scripts,
        "modes_fixed": modes,
    }


def main():
    if len(sys.argv) != 2:
        fail("usage: setup_env.py FINAL_ROOT")
    final_root = Path(sys.argv[1])
    prefix = Path(sys.prefix)
    if prefix == Path(sys.base_prefix):
        fail(f"{sys.executable} is not a virtualenv's python")
    share = prefix / "share" / "code-interpreter"
    # Leave no trace in the builder's home (IPython would create ~/.ipython, matplotlib ~/.cache/matplotlib).
    scratch = tempfile.mkdtemp(prefix="kernel-env-setup-")
    for var in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "IPYTHONDIR", "JUPYTER_CONFIG_DIR",
                "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        os.environ[var] = os.path.join(scratch, var.lower())
    try:
        report = finish(prefix, share, final_root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
