//! The preloaded heap made immortal before the first fork (CPython 3.12 and 3.13): every object reachable from the
//! collector's lists gets the reference count CPython gives its immortal objects (PEP 683), whose `Py_INCREF` and
//! `Py_DECREF` write nothing. A kernel touching a preloaded object (a module's function, a class, a constant) then
//! reads its page instead of copying it, where on 3.11 every such touch is a reference count written, and a
//! copy-on-write fault the first time on each page. Such objects are never freed, which the zygote's are not
//! anyway: they are what every kernel starts from, and a kernel's own objects stay mortal.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_ulong, c_void};

use libloading::os::unix::Symbol;

use crate::python::{Python, PythonError};

/// A `PyObject *`.
type Object = *mut c_void;
/// `visitproc` and `traverseproc` (object.h).
type Visit = unsafe extern "C" fn(Object, *mut c_void) -> c_int;
type Traverse = unsafe extern "C" fn(Object, Visit, *mut c_void) -> c_int;

/// `Py_tp_traverse` (typeslots.h).
const TP_TRAVERSE: c_int = 71;
/// `_Py_IMMORTAL_REFCNT` of 3.12 and 3.13 on 64-bit builds with a GIL: the low 32 bits set. `Py_INCREF` saturates
/// there and `Py_DECREF` leaves alone any count whose low half is negative as an `int32`.
const IMMORTAL: isize = u32::MAX as isize;

/// The C API the walk needs, from the loaded libpython.
struct Api {
    import_module: Symbol<unsafe extern "C" fn(*const c_char) -> Object>,
    get_attr: Symbol<unsafe extern "C" fn(Object, *const c_char) -> Object>,
    call_no_args: Symbol<unsafe extern "C" fn(Object) -> Object>,
    list_size: Symbol<unsafe extern "C" fn(Object) -> isize>,
    list_item: Symbol<unsafe extern "C" fn(Object, isize) -> Object>,
    is_tracked: Symbol<unsafe extern "C" fn(Object) -> c_int>,
    is_gc: Symbol<unsafe extern "C" fn(Object) -> c_int>,
    type_slot: Symbol<unsafe extern "C" fn(Object, c_int) -> *mut c_void>,
    dec_ref: Symbol<unsafe extern "C" fn(Object)>,
    print_error: Symbol<unsafe extern "C" fn()>,
}

/// Makes every object the collector tracks, and every untracked one they refer to (strings, numbers, tuples and
/// dicts the collector skips), immortal. Does nothing where this does not apply (another CPython version, or a build
/// whose object header differs, such as a free-threaded one).
///
/// Call with the GIL held, once preloading is done and before `gc.freeze()` (whose objects `gc.get_objects()` no
/// longer lists).
pub(crate) fn apply(python: &Python) -> Result<(), PythonError> {
    // SAFETY: `Py_Version` (3.11+) is a `const unsigned long`; `_Py_NoneStruct` is `None`, a `PyObject`, whose first
    // word is its reference count in builds with a GIL.
    let (version, none_count) = unsafe {
        let version: Symbol<*const c_ulong> = python.symbol(b"Py_Version\0")?;
        let none: Symbol<*const isize> = python.symbol(b"_Py_NoneStruct\0")?;
        (**version, **none)
    };
    let minor = (version >> 16) & 0xff;
    // `None` is immortal: its count at least `IMMORTAL` (an extension built for an older ABI may have raised it
    // further for a while). In a free-threaded build the first word is a thread id, 0 for `None`.
    if version >> 24 != 3 || !(12..=13).contains(&minor) || none_count < IMMORTAL {
        return Ok(());
    }
    // SAFETY (all `symbol`s): each type is the C prototype of that function in CPython's C API (import.h, abstract.h,
    // listobject.h, objimpl.h, object.h, pyerrors.h).
    let api = unsafe {
        Api {
            import_module: python.symbol(b"PyImport_ImportModule\0")?,
            get_attr: python.symbol(b"PyObject_GetAttrString\0")?,
            call_no_args: python.symbol(b"PyObject_CallNoArgs\0")?,
            list_size: python.symbol(b"PyList_Size\0")?,
            list_item: python.symbol(b"PyList_GetItem\0")?,
            is_tracked: python.symbol(b"PyObject_GC_IsTracked\0")?,
            is_gc: python.symbol(b"PyObject_IS_GC\0")?,
            type_slot: python.symbol(b"PyType_GetSlot\0")?,
            dec_ref: python.symbol(b"Py_DecRef\0")?,
            print_error: python.symbol(b"PyErr_Print\0")?,
        }
    };
    // SAFETY: the interpreter is initialized and this (the only) thread holds the GIL.
    let objects = unsafe { tracked_objects(&api) }.ok_or(PythonError::Raised("gc.get_objects()"))?;
    // SAFETY: as above; `objects` is a list we own a reference to.
    unsafe { immortalize(&api, objects) };
    // SAFETY: as above; the list itself stayed mortal (it is not in its own snapshot), so this frees it.
    unsafe { (api.dec_ref)(objects) };
    Ok(())
}

/// `gc.get_objects()`, a new reference; `None` (the error printed) if it raised.
///
/// # Safety
/// The GIL is held.
unsafe fn tracked_objects(api: &Api) -> Option<Object> {
    let gc = (api.import_module)(c"gc".as_ptr());
    if gc.is_null() {
        (api.print_error)();
        return None;
    }
    let get_objects = (api.get_attr)(gc, c"get_objects".as_ptr());
    (api.dec_ref)(gc);
    if get_objects.is_null() {
        (api.print_error)();
        return None;
    }
    let objects = (api.call_no_args)(get_objects);
    (api.dec_ref)(get_objects);
    if objects.is_null() {
        (api.print_error)();
        return None;
    }
    Some(objects)
}

/// What the traversal's visitor needs: the objects still to do, and how to tell the ones already listed.
struct Walk<'a> {
    pending: Vec<Object>,
    is_tracked: &'a Symbol<unsafe extern "C" fn(Object) -> c_int>,
}

/// Marks each object of the list `objects` and what it refers to that the collector does not track (those are
/// in the list themselves). An object whose count already is [`IMMORTAL`] (done before, or immortal from the
/// start) is skipped, so each is visited once.
///
/// # Safety
/// The GIL is held and `objects` is a list.
unsafe fn immortalize(api: &Api, objects: Object) {
    let mut walk = Walk { pending: Vec::new(), is_tracked: &api.is_tracked };
    for index in 0..(api.list_size)(objects) {
        walk.pending.push((api.list_item)(objects, index));
        while let Some(object) = walk.pending.pop() {
            let refcount = object.cast::<isize>();
            if *refcount == IMMORTAL {
                continue;
            }
            *refcount = IMMORTAL;
            // Only what the collector would traverse (as `gc.get_referents` does): static types, for one, are not
            // collected and abort in their traversal. `ob_type` follows the reference count in the header.
            if (api.is_gc)(object) == 0 {
                continue;
            }
            let traverse = (api.type_slot)(*object.cast::<Object>().add(1), TP_TRAVERSE);
            if !traverse.is_null() {
                let traverse: Traverse = std::mem::transmute::<*mut c_void, Traverse>(traverse);
                traverse(object, visit_untracked, (&raw mut walk).cast());
            }
        }
    }
}

/// The traversal's visitor: queues a referent the collector does not track (a tracked one is in the list).
unsafe extern "C" fn visit_untracked(object: Object, walk: *mut c_void) -> c_int {
    // SAFETY: `walk` is the `Walk` that `immortalize` passed to the traversal, alive for its duration.
    let walk = unsafe { &mut *walk.cast::<Walk>() };
    // SAFETY: `object` is a live object the traversed one refers to; the GIL is held.
    if !object.is_null() && unsafe { (walk.is_tracked)(object) } == 0 {
        walk.pending.push(object);
    }
    0
}
