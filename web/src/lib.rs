//! `lenet5-web`: the engine, `lenet5-core`, compiled to WebAssembly for the page that trains LeNet-5 in a
//! browser tab (`lenet5 serve`'s `/train`, or `lenet5 site`). The page's Web Worker
//! (`assets/web/train-worker.js`) calls the functions exported below; they pass bytes and JSON through the
//! module's memory, and every one that can fail returns a negative status and leaves the message as its result.
//! The work itself is in [`session`], plain Rust that the tests also run natively.
//!
//! The module imports one function, `env.now_seconds() -> f64` (the page's clock), for the seconds an epoch
//! takes. It is built by `scripts/build-web.sh` (with SIMD128) twice: for `wasm32-unknown-unknown` into
//! `assets/web/lenet5.wasm`, one thread; and with the `threads` feature for `wasm32-wasip1-threads` into
//! `assets/web/lenet5-threads.wasm`, whose training steps are shared by `threads` workers as natively. That one
//! also imports its shared memory (`env.memory`), the few WASI functions the standard library calls, and
//! `wasi.thread-spawn`; `assets/web/threads.js` provides them.

pub mod session;

use std::cell::RefCell;

use session::Session;

thread_local! {
    static SESSION: RefCell<Session> = {
        keep_panic_messages();
        RefCell::new(Session::default())
    };
    /// The last call's result: JSON, a message, or a checkpoint's bytes.
    static RESULT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// In the browser a panic aborts (the module traps); its message is left as the result first, for the page.
fn keep_panic_messages() {
    #[cfg(target_arch = "wasm32")]
    std::panic::set_hook(Box::new(|info| {
        RESULT.with(|r| {
            if let Ok(mut r) = r.try_borrow_mut() {
                *r = format!("internal error: {info}").into_bytes();
            }
        })
    }));
}

/// The clock: the page's, in a browser; the process's, natively (for tests).
fn now() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        #[link(wasm_import_module = "env")]
        unsafe extern "C" {
            fn now_seconds() -> f64;
        }
        // SAFETY: the import takes nothing and returns a number.
        unsafe { now_seconds() }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
    }
}

/// Keeps `value` as the result and returns `status` (or the message and -1 on failure).
fn finish<T>(outcome: session::Result<T>, result: impl FnOnce(&T) -> Vec<u8>, status: impl FnOnce(&T) -> i32) -> i32 {
    let (bytes, code) = match &outcome {
        Ok(v) => (result(v), status(v)),
        Err(error) => (error.to_string().into_bytes(), -1),
    };
    RESULT.with(|r| *r.borrow_mut() = bytes);
    code
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialisable")
}

/// Bytes the caller placed at `ptr` (from [`alloc`]).
///
/// # Safety
/// `ptr..ptr + len` must be readable memory of this module (or `len` zero).
unsafe fn bytes(ptr: *const u8, len: usize) -> Vec<u8> {
    if len == 0 {
        return Vec::new();
    }
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
}

/// Takes over the `len` bytes the caller wrote into a block from [`alloc`] (which the caller then no longer
/// gives back): a large file is not copied.
///
/// # Safety
/// `ptr` and `len` must be a pointer [`alloc`] returned, the length it was asked for, and that many bytes
/// written there.
unsafe fn owned(ptr: *mut u8, len: usize) -> Vec<u8> {
    // SAFETY: the caller's promise: `alloc`'s vector, with its capacity, its bytes written.
    unsafe { Vec::from_raw_parts(ptr, len, len.max(1)) }
}

/// Room for `len` bytes, for the page to write into; give it back with [`dealloc`].
#[unsafe(no_mangle)]
pub extern "C" fn alloc(len: usize) -> *mut u8 {
    let mut room = Vec::<u8>::with_capacity(len.max(1));
    let ptr = room.as_mut_ptr();
    std::mem::forget(room);
    ptr
}

/// Gives back what [`alloc`] gave.
///
/// # Safety
/// `ptr` and `len` must be a pointer [`alloc`] returned and the length it was asked for.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dealloc(ptr: *mut u8, len: usize) {
    // SAFETY: the caller's promise: this is `alloc`'s vector, with its capacity.
    drop(unsafe { Vec::from_raw_parts(ptr, 0, len.max(1)) });
}

/// Where the last result is.
#[unsafe(no_mangle)]
pub extern "C" fn result_ptr() -> *const u8 {
    RESULT.with(|r| r.borrow().as_ptr())
}

/// How long the last result is.
#[unsafe(no_mangle)]
pub extern "C" fn result_len() -> usize {
    RESULT.with(|r| r.borrow().len())
}

/// Loads a data set from its four files (training images and labels, test images and labels, each gzipped
/// or raw) and its name. Result: `{"dataset", "train", "test", "classes"}`.
///
/// # Safety
/// Each pointer and length must be bytes of this module's memory.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn load_data(
    train_images: *const u8,
    train_images_len: usize,
    train_labels: *const u8,
    train_labels_len: usize,
    test_images: *const u8,
    test_images_len: usize,
    test_labels: *const u8,
    test_labels_len: usize,
    name: *const u8,
    name_len: usize,
) -> i32 {
    // SAFETY: the caller's promise.
    let files = unsafe {
        [
            bytes(train_images, train_images_len),
            bytes(train_labels, train_labels_len),
            bytes(test_images, test_images_len),
            bytes(test_labels, test_labels_len),
        ]
    };
    // SAFETY: as above.
    let name = String::from_utf8_lossy(&unsafe { bytes(name, name_len) }).into_owned();
    SESSION.with(|s| {
        let mut s = s.borrow_mut();
        let outcome = s.load(&name, files);
        let classes = s.class_names().to_vec();
        finish(
            outcome,
            |&(train, test)| {
                json(&serde_json::json!({"dataset": name, "train": train, "test": test, "classes": classes}))
            },
            |_| 0,
        )
    })
}

/// Takes one file of a folder being handed over: its path inside the folder (`/` between names; a folder's ends
/// in `/`) and its bytes, whose block from [`alloc`] the module takes over.
///
/// # Safety
/// `path` must be bytes of this module's memory; `ptr` and `len` a block from [`alloc`], written.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stage_file(path: *const u8, path_len: usize, ptr: *mut u8, len: usize) -> i32 {
    // SAFETY: the caller's promise.
    let (path, file) = unsafe { (bytes(path, path_len), owned(ptr, len)) };
    let path = String::from_utf8_lossy(&path).into_owned();
    SESSION.with(|s| finish(s.borrow_mut().stage_file(path, file), |_| Vec::new(), |_| 0))
}

/// Forgets the files staged so far.
#[unsafe(no_mangle)]
pub extern "C" fn clear_staged() {
    SESSION.with(|s| s.borrow_mut().clear_staged())
}

/// Reads the staged files as the image folder `name`, or, when `zip_len` is not zero, the zip archive at `zip`
/// (named `name`; its block from [`alloc`] the module takes over), with the folder settings of a run
/// specification's JSON. Result: JSON (see [`session::FolderLoaded`]).
///
/// # Safety
/// `name` and `settings` must be bytes of this module's memory; `zip` and `zip_len` a block from [`alloc`],
/// written, or `zip_len` zero.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn load_images(
    name: *const u8,
    name_len: usize,
    settings: *const u8,
    settings_len: usize,
    zip: *mut u8,
    zip_len: usize,
) -> i32 {
    // SAFETY: the caller's promise.
    let (name, settings) = unsafe { (bytes(name, name_len), bytes(settings, settings_len)) };
    let (name, settings) = (String::from_utf8_lossy(&name).into_owned(), String::from_utf8_lossy(&settings));
    SESSION.with(|s| {
        let mut s = s.borrow_mut();
        let outcome = match zip_len {
            0 => s.load_folder(&name, &settings),
            // SAFETY: the caller's promise.
            _ => s.load_zip(&name, unsafe { owned(zip, zip_len) }, &settings),
        };
        finish(outcome, json, |_| 0)
    })
}

/// Most bytes of a folder or a zip archive the page reads ([`session::MAX_FOLDER_BYTES`]).
#[unsafe(no_mangle)]
pub extern "C" fn max_folder_bytes() -> u32 {
    session::MAX_FOLDER_BYTES as u32
}

/// The recipe's settings, the defaults of the page's form. Result: the JSON of the default run specification.
#[unsafe(no_mangle)]
pub extern "C" fn defaults() -> i32 {
    let spec = lenet5_core::spec::RunSpec::default();
    finish(Ok(()), |_| spec.to_json_text().into_bytes(), |_| 0)
}

/// Most workers a run takes ([`session::MAX_WORKERS`]), for the page's control.
#[unsafe(no_mangle)]
pub extern "C" fn max_workers() -> u32 {
    session::MAX_WORKERS as u32
}

/// Most workers a run on batches of `batch_size` keeps busy, and so takes
/// ([`lenet5_core::train::Trainer::useful_workers`]): the page starts no helper threads for more.
#[unsafe(no_mangle)]
pub extern "C" fn useful_workers(batch_size: u32) -> u32 {
    lenet5_core::train::Trainer::useful_workers(batch_size as usize) as u32
}

/// Starts a new run with the settings given as the JSON of a run specification (`{"epochs", "batch_size", "lr",
/// "momentum", "seed", "head", "train_limit", ...}`, each optional, the recipe's by default).
///
/// # Safety
/// `ptr..ptr + len` must be bytes of this module's memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn configure(ptr: *const u8, len: usize) -> i32 {
    // SAFETY: the caller's promise.
    let settings = String::from_utf8_lossy(&unsafe { bytes(ptr, len) }).into_owned();
    SESSION.with(|s| finish(s.borrow_mut().configure(&settings), |_| Vec::new(), |_| 0))
}

/// Trains a few made-up images in a session of their own, on one worker and, where `workers` is more, on two
/// (the helper threads for them started), so that the browser compiles the engine's fast code before the first
/// epoch (see [`Session::warm_up`]); returns how many. Leaves the page's session as it was.
#[unsafe(no_mangle)]
pub extern "C" fn warm_up(workers: u32) -> i32 {
    finish(Session::warm_up(workers as usize), |_| Vec::new(), |&n| n as i32)
}

/// Trains at most `max_batches` batches; returns how many it trained.
#[unsafe(no_mangle)]
pub extern "C" fn train(max_batches: u32) -> i32 {
    SESSION.with(|s| finish(s.borrow_mut().train(max_batches as usize, &now), |_| Vec::new(), |&n| n as i32))
}

/// Evaluates and records the epoch whose batches are all trained. Result: its metrics, as `metrics.jsonl`.
#[unsafe(no_mangle)]
pub extern "C" fn finish_epoch() -> i32 {
    SESSION.with(|s| finish(s.borrow_mut().finish_epoch(&now), json, |_| 0))
}

/// Where the run stands. Result: JSON (see [`session::Status`]).
#[unsafe(no_mangle)]
pub extern "C" fn status() -> i32 {
    SESSION.with(|s| finish(s.borrow().status(), json, |_| 0))
}

/// The current parameters (61,706 `f32`, conv1's six 5x5 kernels first), or null before a run. Valid until
/// the next call into the module.
#[unsafe(no_mangle)]
pub extern "C" fn params_ptr() -> *const f32 {
    SESSION.with(|s| s.borrow().params().map_or(std::ptr::null(), <[f32]>::as_ptr))
}

/// The momentum, laid out as the parameters, or null before a run. Valid until the next call into the module.
#[unsafe(no_mangle)]
pub extern "C" fn velocity_ptr() -> *const f32 {
    SESSION.with(|s| s.borrow().velocity().map_or(std::ptr::null(), <[f32]>::as_ptr))
}

/// Reads a drawing of `width x height` grey bytes with the weights as they are now. Result: `{"class",
/// "probabilities", "input"}`.
///
/// # Safety
/// `ptr..ptr + width * height` must be bytes of this module's memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn predict(ptr: *const u8, width: u32, height: u32) -> i32 {
    let (width, height) = (width as usize, height as usize);
    // SAFETY: the caller's promise.
    let grey = unsafe { bytes(ptr, width.saturating_mul(height)) };
    SESSION.with(|s| finish(s.borrow().predict(grey, width, height), json, |p| p.class as i32))
}

/// The weights as a safetensors checkpoint (see [`session::Session::checkpoint`]). Result: its bytes.
#[unsafe(no_mangle)]
pub extern "C" fn checkpoint() -> i32 {
    SESSION.with(|s| finish(s.borrow().checkpoint(), |b| b.clone(), |_| 0))
}
