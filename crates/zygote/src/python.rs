//! The embedded interpreter: CPython's shared library loaded with `dlopen` and the handful of C API calls the
//! zygote needs. The crate's only `unsafe`.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CString};
use std::path::Path;

use libloading::os::unix::{Library, Symbol, RTLD_GLOBAL, RTLD_NOW};

use crate::arenas::ArenaAllocator;

/// Loading or starting the interpreter failed.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    /// `dlopen` or `dlsym` failed.
    #[error("loading {library}")]
    Load {
        /// The shared library.
        library: String,
        /// Why.
        #[source]
        source: libloading::Error,
    },
    /// A path or code string held a NUL byte.
    #[error("{0} contains a NUL byte")]
    Nul(&'static str),
    /// The program name could not be decoded by the interpreter.
    #[error("Py_DecodeLocale failed for the program name")]
    Decode,
    /// Python code raised (the traceback went to stderr).
    #[error("the {0} code raised an exception (traceback above)")]
    Raised(&'static str),
}

type Void = unsafe extern "C" fn();

/// A loaded libpython, initialized once by [`Python::initialize`].
pub struct Python {
    before_fork: Symbol<Void>,
    after_fork_child: Symbol<Void>,
    run_simple_string: Symbol<unsafe extern "C" fn(*const c_char) -> c_int>,
    set_program_name: Symbol<unsafe extern "C" fn(*const libc::wchar_t) -> ()>,
    decode_locale: Symbol<unsafe extern "C" fn(*const c_char, *mut usize) -> *mut libc::wchar_t>,
    initialize_ex: Symbol<unsafe extern "C" fn(c_int)>,
    set_arena_allocator: Symbol<unsafe extern "C" fn(*mut ArenaAllocator)>,
    /// Kept loaded for the life of the process (the symbols above point into it).
    library: Library,
    /// Its path, for errors.
    name: String,
}

impl Python {
    /// Loads `library` (e.g. `.../lib/libpython3.11.so.1.0`) with its symbols global, so the extension modules
    /// Python imports later find the C API in it.
    pub fn load(library: &Path) -> Result<Python, PythonError> {
        let name = library.display().to_string();
        // SAFETY: loading libpython runs its ELF constructors, which only set up static data; nothing else in
        // this process uses Python yet.
        let lib = unsafe { Library::open(Some(library), RTLD_NOW | RTLD_GLOBAL) }
            .map_err(|source| PythonError::Load { library: name.clone(), source })?;
        // SAFETY (all `symbol`s): each type is the C prototype of that function in CPython's stable C API
        // (Python.h: pylifecycle.h, pythonrun.h, intrcheck.h, fileutils.h).
        unsafe {
            Ok(Python {
                before_fork: symbol(&lib, &name, b"PyOS_BeforeFork\0")?,
                after_fork_child: symbol(&lib, &name, b"PyOS_AfterFork_Child\0")?,
                run_simple_string: symbol(&lib, &name, b"PyRun_SimpleString\0")?,
                set_program_name: symbol(&lib, &name, b"Py_SetProgramName\0")?,
                decode_locale: symbol(&lib, &name, b"Py_DecodeLocale\0")?,
                initialize_ex: symbol(&lib, &name, b"Py_InitializeEx\0")?,
                set_arena_allocator: symbol(&lib, &name, b"PyObject_SetArenaAllocator\0")?,
                library: lib,
                name,
            })
        }
    }

    /// Another symbol of the loaded libpython (`name` NUL-terminated), for the C API calls of `immortal`.
    ///
    /// # Safety
    /// `T` is the C type of that symbol (a function's prototype, or a pointer to a variable of its type).
    pub(crate) unsafe fn symbol<T>(&self, name: &[u8]) -> Result<Symbol<T>, PythonError> {
        // SAFETY: as the caller promises.
        unsafe { symbol(&self.library, &self.name, name) }
    }

    /// Starts the interpreter as if it were `program` (a venv's `bin/python`: `sys.prefix` becomes the venv),
    /// with Python's usual signal handling (SIGINT raises `KeyboardInterrupt`, SIGPIPE ignored). Call once.
    pub fn initialize(&self, program: &Path) -> Result<(), PythonError> {
        let program = CString::new(program.as_os_str().as_encoded_bytes()).map_err(|_| PythonError::Nul("program"))?;
        // SAFETY: Py_DecodeLocale may be called before initialization; it returns a PyMem_RawMalloc'd wide string
        // or NULL. Py_SetProgramName keeps the pointer, which therefore is never freed.
        unsafe {
            let wide = (self.decode_locale)(program.as_ptr(), std::ptr::null_mut());
            if wide.is_null() {
                return Err(PythonError::Decode);
            }
            (self.set_program_name)(wide);
            (self.initialize_ex)(1);
        }
        Ok(())
    }

    /// Runs `code` in `__main__`; `what` names it in the error.
    pub fn run(&self, what: &'static str, code: &str) -> Result<(), PythonError> {
        let code = CString::new(code).map_err(|_| PythonError::Nul(what))?;
        // SAFETY: the interpreter is initialized and this (the only) thread holds the GIL; `code` outlives the call.
        match unsafe { (self.run_simple_string)(code.as_ptr()) } {
            0 => Ok(()),
            _ => Err(PythonError::Raised(what)),
        }
    }

    /// `PyObject_SetArenaAllocator`: pymalloc takes its arenas from `allocator` from now on (CPython copies it).
    pub(crate) fn set_arena_allocator(&self, mut allocator: ArenaAllocator) {
        // SAFETY: the interpreter is initialized and this (the only) thread holds the GIL; the allocator's functions
        // hand out and take back whole arenas, as CPython's own do, and live as long as the process.
        unsafe { (self.set_arena_allocator)(&mut allocator) }
    }

    /// `PyOS_BeforeFork`: takes the locks a fork must not find in another thread's hands (the import lock, the
    /// `os.register_at_fork` ones such as logging's). Python runs no more code in this process afterwards unless
    /// `PyOS_AfterFork_Parent` (not bound here) gives them back: a process that only forks calls it once.
    pub fn before_forks(&self) {
        // SAFETY: the interpreter is initialized and this (the only) thread holds the GIL.
        unsafe { (self.before_fork)() }
    }

    /// `PyOS_AfterFork_Child`: call first thing in a child (or grandchild) that will run Python.
    pub fn after_fork_child(&self) {
        // SAFETY: this process is a fork of a single-threaded one whose only thread held the GIL and was not
        // inside Python (see `Kernel`'s fork hooks), with nothing run in between.
        unsafe { (self.after_fork_child)() }
    }
}

/// `name` (NUL-terminated) in `lib`, the library at `library`.
///
/// # Safety
/// `T` is the C type of that symbol.
unsafe fn symbol<T>(lib: &Library, library: &str, name: &[u8]) -> Result<Symbol<T>, PythonError> {
    // SAFETY: as the caller promises.
    unsafe { lib.get(name) }.map_err(|source| PythonError::Load { library: library.to_owned(), source })
}
