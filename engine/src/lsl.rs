//! Lab Streaming Layer through liblsl loaded at run time (the `lsl` crate does not build on
//! current Debian and liblsl is not packaged there; the pylsl wheel ships `liblsl.so`).
//!
//! The library is the path given by the node's `liblsl` key or the `NEUROSTREAM_LIBLSL`
//! environment variable when set; otherwise the system's `liblsl.so` / `liblsl.so.2`, then the
//! copy pylsl ships in `$VIRTUAL_ENV` or a `.venv` in the working directory or above.
//! Only the C API calls the `lsl` source and sink use are bound.

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Arc;

use libloading::Library;

/// Opaque liblsl handles.
pub type Handle = *mut c_void;

/// liblsl's channel formats.
pub const CFT_FLOAT32: i32 = 1;
/// String channels (marker streams).
pub const CFT_STRING: i32 = 3;
/// Post-processing: clock synchronization (remote time stamps mapped to the local clock).
pub const PROC_CLOCKSYNC: u32 = 1;
/// Post-processing: dejittering of time stamps.
pub const PROC_DEJITTER: u32 = 2;
/// Post-processing: monotonic time stamps.
pub const PROC_MONOTONIZE: u32 = 4;

macro_rules! api {
    ($($name:ident: fn($($arg:ty),*) -> $ret:ty;)*) => {
        /// The bound liblsl functions.
        #[allow(missing_docs)]
        pub struct Api {
            _lib: Library,
            $(pub $name: unsafe extern "C" fn($($arg),*) -> $ret,)*
        }

        impl Api {
            fn bind(lib: Library) -> Result<Api, String> {
                // SAFETY: the symbol types follow liblsl's lsl_c.h (1.16+).
                unsafe {
                    $(let $name = *lib
                        .get::<unsafe extern "C" fn($($arg),*) -> $ret>(concat!(stringify!($name), "\0").as_bytes())
                        .map_err(|e| format!("liblsl lacks {}: {e}", stringify!($name)))?;)*
                    Ok(Api { _lib: lib, $($name,)* })
                }
            }
        }
    };
}

api! {
    lsl_create_streaminfo: fn(*const c_char, *const c_char, i32, f64, i32, *const c_char) -> Handle;
    lsl_destroy_streaminfo: fn(Handle) -> ();
    lsl_resolve_byprop: fn(*mut Handle, u32, *const c_char, *const c_char, i32, f64) -> i32;
    lsl_create_inlet: fn(Handle, i32, i32, i32) -> Handle;
    lsl_destroy_inlet: fn(Handle) -> ();
    lsl_get_fullinfo: fn(Handle, f64, *mut i32) -> Handle;
    lsl_open_stream: fn(Handle, f64, *mut i32) -> ();
    lsl_set_postprocessing: fn(Handle, u32) -> i32;
    lsl_pull_chunk_f: fn(Handle, *mut f32, *mut f64, u64, u64, f64, *mut i32) -> u64;
    lsl_pull_sample_f: fn(Handle, *mut f32, i32, f64, *mut i32) -> f64;
    lsl_pull_sample_str: fn(Handle, *mut *mut c_char, i32, f64, *mut i32) -> f64;
    lsl_destroy_string: fn(*mut c_char) -> ();
    lsl_get_channel_count: fn(Handle) -> i32;
    lsl_get_nominal_srate: fn(Handle) -> f64;
    lsl_get_channel_format: fn(Handle) -> i32;
    lsl_get_name: fn(Handle) -> *const c_char;
    lsl_get_desc: fn(Handle) -> Handle;
    lsl_child: fn(Handle, *const c_char) -> Handle;
    lsl_next_sibling: fn(Handle) -> Handle;
    lsl_child_value_n: fn(Handle, *const c_char) -> *const c_char;
    lsl_empty: fn(Handle) -> i32;
    lsl_append_child: fn(Handle, *const c_char) -> Handle;
    lsl_append_child_value: fn(Handle, *const c_char, *const c_char) -> Handle;
    lsl_create_outlet: fn(Handle, i32, i32) -> Handle;
    lsl_destroy_outlet: fn(Handle) -> ();
    lsl_push_sample_ftp: fn(Handle, *const f32, f64, i32) -> i32;
    lsl_push_sample_strtp: fn(Handle, *const *const c_char, f64, i32) -> i32;
    lsl_wait_for_consumers: fn(Handle, f64) -> i32;
    lsl_have_consumers: fn(Handle) -> i32;
    lsl_local_clock: fn() -> f64;
}

// SAFETY: liblsl's functions are thread-safe for distinct handles; the engine uses each inlet
// and outlet from one thread at a time.
unsafe impl Send for Api {}
unsafe impl Sync for Api {}

/// The liblsl that pylsl ships in the active virtual environment (`$VIRTUAL_ENV`) or in a
/// `.venv` in the working directory or one above it (where the test set-up installs it).
fn pylsl_copies() -> Vec<String> {
    let mut envs: Vec<std::path::PathBuf> = std::env::var_os("VIRTUAL_ENV").map(Into::into).into_iter().collect();
    if let Ok(cwd) = std::env::current_dir() {
        envs.extend(cwd.ancestors().map(|d| d.join(".venv")));
    }
    let mut found = Vec::new();
    for env in envs {
        let Ok(pythons) = std::fs::read_dir(env.join("lib")) else {
            continue;
        };
        for py in pythons.flatten() {
            let lib = py.path().join("site-packages/pylsl/lib/liblsl.so");
            if lib.is_file() {
                found.push(lib.to_string_lossy().to_string());
            }
        }
    }
    found
}

/// Loads liblsl from `explicit` or `$NEUROSTREAM_LIBLSL` when given (nothing else then), else
/// from the system search path or the copy pylsl ships in a virtual environment (see
/// `pylsl_copies`).
pub fn load(explicit: Option<&str>) -> Result<Arc<Api>, String> {
    let mut tried = Vec::new();
    let env = std::env::var("NEUROSTREAM_LIBLSL").ok();
    // A library named by the node or the environment is the one to use: no searching past it.
    let named: Vec<String> = explicit.map(str::to_string).into_iter().chain(env).collect();
    let candidates: Vec<String> = if named.is_empty() {
        ["liblsl.so", "liblsl.so.2", "liblsl.dylib"]
            .into_iter()
            .map(str::to_string)
            .chain(pylsl_copies())
            .collect()
    } else {
        named
    };
    for c in candidates {
        // SAFETY: loading a shared library runs its initializers; liblsl's are benign.
        match unsafe { Library::new(&c) } {
            Ok(lib) => return Api::bind(lib).map(Arc::new),
            Err(e) => tried.push(format!("{c}: {e}")),
        }
    }
    Err(format!(
        "liblsl could not be loaded ({}). Install pylsl (`pip install pylsl`, it ships liblsl.so) and point \
         NEUROSTREAM_LIBLSL (or the node's `liblsl` key) at it: python -c \"import pylsl, os; \
         print(os.path.join(os.path.dirname(pylsl.__file__), 'lib', 'liblsl.so'))\"",
        tried.join("; ")
    ))
}

/// A C string for liblsl (interior NULs replaced).
pub fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).expect("no interior NUL")
}

/// A borrowed C string from liblsl as a Rust string ("" for null).
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string that outlives the call.
pub unsafe fn string(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Describes a liblsl error code.
pub fn error_name(ec: i32) -> &'static str {
    match ec {
        0 => "no error",
        -1 => "timeout",
        -2 => "the stream was lost (the outlet went away)",
        -3 => "invalid argument",
        _ => "internal error",
    }
}
