//! The GDAL side of geopreview: what runs inside the import child, the `hdx-jobs-import`
//! executable installed beside `hdx-jobs` (its `main` is `hdx-jobs-cli/src/bin/hdx-jobs-import.rs`).
//!
//! Only this crate links GDAL. The worker and the server (`hdx-jobs`) spawn the child with
//! `hdx_jobs::geo::child` and never load libgdal and its hundred-odd shared libraries, which
//! would otherwise cost every `hdx-jobs` process tens of MB of memory and tens of ms at start.
//! The protocol (the request on stdin, JSON lines on stdout), the child's confinement and the
//! unpacking of archives live in `hdx_jobs::geo::child` and `hdx_jobs::geo::archive`; this crate
//! adds the import itself and [`child_main`], the child's entry point.
//!
//! The file goes into a staging table in PostGIS through GDAL's own `ogr2ogr` code
//! (`GDALVectorTranslate`, in-process), with COPY on and the old service's options
//! (`-overwrite -lco OVERWRITE=YES -fieldTypeToString Real -t_srs EPSG:4326`, geometry column
//! `wkb_geometry`); the spatial index is left to the caller, which builds it after loading.
//!
//! GeoJSON files that GDAL would turn into a plain table (the common HDX case) skip GDAL: the
//! native reader in [`geojson`] writes the same table faster, and leaves every other file to
//! GDAL.
//!
//! GDAL's messages are captured per thread (`CPLPushErrorHandlerEx`), so they never mix with
//! another import's, and they decide the outcome: a translation that returns a dataset but
//! reported an error is a failed attempt (GDAL keeps going after some read errors, e.g. in a
//! truncated shapefile). After a failed attempt the old service's repair rules
//! (docs/hdx-contract.md §3.5) are tried one at a time, in its order, each at most once
//! (`hdx_jobs::geo::import::next_fix`).
//!
//! Config options are set thread-locally (`PG_USE_COPY=YES`, and `PGCLIENTENCODING` for the
//! latin1 rule together with libpq's `client_encoding`): `--config` in argv is not honoured by
//! the library call.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::{Read, Write};
use std::panic::AssertUnwindSafe;
use std::path::Path;

use gdal::vector::LayerAccess;
use gdal::{Dataset, DatasetOptions, GdalOpenFlags};
use hdx_jobs::geo::import::{next_fix, Attempt, Fix, ImportReport, ImportRequest, NativeGeojson};

pub mod geojson;

/// Drivers a source may be opened with: the formats HDX previews, and their JSON cousins.
pub const SOURCE_DRIVERS: [&str; 6] = [
    "GeoJSON",
    "ESRIJSON",
    "TopoJSON",
    "ESRI Shapefile",
    "LIBKML",
    "KML",
];

/// The import child's side of the protocol (`hdx_jobs::geo::child`): reads the request on
/// `input`, unpacks the file when it is an archive, imports it with GDAL, writes progress and the
/// report on `output`. Returns the process exit code (0 when a report was written, whatever it
/// says). GDAL's drivers are loaded first, while the parent is still getting the file.
pub fn child_main(input: impl Read, output: impl Write) -> i32 {
    hdx_jobs::geo::child::child_main(input, output, prepare, import)
}

/// Registers GDAL's drivers (once per process; imports do it themselves if needed).
pub fn prepare() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(gdal::DriverManager::register_all);
}

/// Imports `source` (the request's file, or the layer file unpacked from it) into the staging
/// table: with the native GeoJSON reader ([`geojson`]) when it is a GeoJSON file the reader
/// reproduces GDAL's table for, else with GDAL ([`import_with_gdal`]). `progress` gets the
/// fraction done (0 to 1) of each attempt.
pub fn import(
    request: &ImportRequest,
    source: &Path,
    progress: &mut dyn FnMut(f64),
) -> ImportReport {
    let native = if geojson::applies(source) {
        match geojson::import(request, source, progress) {
            Ok(features) => {
                return ImportReport {
                    ok: true,
                    fixes: Vec::new(),
                    attempts: vec![Attempt {
                        fixes: Vec::new(),
                        ok: true,
                        messages: Vec::new(),
                    }],
                    source_features: Some(features),
                    unpack_failure: None,
                    native_geojson: NativeGeojson::Imported,
                }
            }
            Err(reason) => NativeGeojson::Declined { reason },
        }
    } else {
        NativeGeojson::NotTried
    };
    let mut report = import_with_gdal(request, source, progress);
    report.native_geojson = native;
    report
}

/// Imports `source` with GDAL, applying repair rules until one attempt succeeds or no rule is
/// left. `progress` gets the fraction done (0 to 1) of each attempt.
pub fn import_with_gdal(
    request: &ImportRequest,
    source: &Path,
    progress: &mut dyn FnMut(f64),
) -> ImportReport {
    let capture = ErrorCapture::push();
    let mut fixes: Vec<Fix> = Vec::new();
    let mut attempts = Vec::new();
    let mut source_features = None;
    loop {
        let (ok, features) = attempt(request, source, &fixes, &capture, progress);
        if features.is_some() {
            source_features = features;
        }
        let messages = capture.take();
        let output = messages.join("\n");
        attempts.push(Attempt {
            fixes: fixes.clone(),
            ok,
            messages,
        });
        if ok {
            return ImportReport {
                ok,
                fixes,
                attempts,
                source_features,
                unpack_failure: None,
                native_geojson: NativeGeojson::NotTried,
            };
        }
        match next_fix(&output, &fixes) {
            Some(fix) => fixes.push(fix),
            None => {
                return ImportReport {
                    ok: false,
                    fixes,
                    attempts,
                    source_features,
                    unpack_failure: None,
                    native_geojson: NativeGeojson::NotTried,
                }
            }
        }
    }
}

/// Runs one translation; returns success and the source's feature count.
fn attempt(
    request: &ImportRequest,
    source_path: &Path,
    fixes: &[Fix],
    capture: &ErrorCapture,
    progress: &mut dyn FnMut(f64),
) -> (bool, Option<u64>) {
    let latin1 = fixes.contains(&Fix::Latin1);
    set_thread_config("PG_USE_COPY", Some("YES"));
    set_thread_config("OGR_PG_ENABLE_METADATA", Some("NO"));
    set_thread_config("PGCLIENTENCODING", latin1.then_some("LATIN1"));

    let options = DatasetOptions {
        open_flags: GdalOpenFlags::GDAL_OF_VECTOR
            | GdalOpenFlags::GDAL_OF_READONLY
            | GdalOpenFlags::GDAL_OF_VERBOSE_ERROR,
        allowed_drivers: Some(&SOURCE_DRIVERS),
        ..Default::default()
    };
    let source = match Dataset::open_ex(source_path, options) {
        Ok(source) => source,
        Err(e) => {
            capture.note(format!(
                "Unable to open datasource `{}' as a GIS file: {e}",
                source_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            return (false, None);
        }
    };
    let counts: Option<Vec<u64>> = source.layers().map(|l| l.try_feature_count()).collect();
    let source_features = counts.map(|c| c.iter().sum());
    if source.layer_count() == 0 {
        capture.note("the file has no layer".to_string());
        return (false, source_features);
    }

    // Every layer of the source goes into the one table: the first replaces it, the others
    // append (adding columns they bring). A mixed source gets a generic geometry column unless a
    // rule already chose the type.
    let layer_names: Vec<String> = source.layers().map(|l| l.name()).collect();
    let several = layer_names.len() > 1;
    // Several layers are named in argv, where a name beginning with `-` would be read as an
    // option (a KML folder named "-sql ..." would become GDAL SQL): refuse those files.
    if several {
        if let Some(name) = layer_names.iter().find(|name| name.starts_with('-')) {
            capture.note(format!(
                "the layer name {name:?} begins with '-' and cannot be imported safely"
            ));
            return (false, source_features);
        }
    }
    let mut dest = format!("PG:{}", request.conninfo);
    if latin1 {
        dest.push_str(" client_encoding=LATIN1");
    }
    let total = layer_names.len() as f64;
    let mut ok = true;
    for (index, layer_name) in layer_names.iter().enumerate() {
        let mut argv: Vec<String> = Vec::new();
        let push = |argv: &mut Vec<String>, items: &[&str]| {
            argv.extend(items.iter().map(|s| s.to_string()))
        };
        push(&mut argv, &["-f", "PostgreSQL"]);
        if index == 0 {
            push(
                &mut argv,
                &[
                    "-overwrite",
                    "-lco",
                    "OVERWRITE=YES",
                    "-lco",
                    "SPATIAL_INDEX=NONE",
                    "-lco",
                    "GEOMETRY_NAME=wkb_geometry",
                ],
            );
            argv.push("-lco".into());
            argv.push(format!("SCHEMA={}", request.schema));
        } else {
            push(&mut argv, &["-append", "-addfields"]);
        }
        push(
            &mut argv,
            &[
                "-fieldTypeToString",
                "Real",
                "-t_srs",
                "EPSG:4326",
                "-gt",
                "unlimited",
                "-progress",
            ],
        );
        argv.push("-nln".into());
        argv.push(if index == 0 {
            request.table.clone()
        } else {
            format!("{}.{}", request.schema, request.table)
        });
        for fix in fixes {
            argv.extend(fix.argv().iter().map(|s| s.to_string()));
        }
        if several && !fixes.iter().any(|f| f.key() == "-nlt") {
            push(&mut argv, &["-nlt", "GEOMETRY"]);
        }
        if several {
            argv.push(layer_name.clone());
        }
        let mut scaled = |fraction: f64| progress((index as f64 + fraction) / total);
        ok = translate(&source, &dest, &argv, capture, &mut scaled);
        if !ok || capture.has_errors() {
            break;
        }
    }
    drop(source);
    let ok = ok && !capture.has_errors();
    if ok {
        progress(1.0);
    }
    (ok, source_features)
}

/// `GDALVectorTranslate(dest, NULL, 1, &source, options)`; true when a dataset came back.
fn translate(
    source: &Dataset,
    dest: &str,
    argv: &[String],
    capture: &ErrorCapture,
    progress: &mut dyn FnMut(f64),
) -> bool {
    let (Ok(c_dest), Ok(c_args)) = (
        CString::new(dest),
        argv.iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<Vec<CString>, _>>(),
    ) else {
        capture.note("an import option contains a NUL byte".into());
        return false;
    };
    let mut c_argv: Vec<*mut c_char> = c_args.iter().map(|a| a.as_ptr() as *mut c_char).collect();
    c_argv.push(std::ptr::null_mut());
    let mut progress_ref: &mut dyn FnMut(f64) = progress;
    // SAFETY: `c_argv` is a NULL-terminated array of valid C strings that outlive the call
    // (GDAL copies them); the options are freed below and nowhere else.
    let options = unsafe {
        gdal_sys::GDALVectorTranslateOptionsNew(c_argv.as_mut_ptr(), std::ptr::null_mut())
    };
    if options.is_null() {
        capture.note("GDAL refused the import options".into());
        return false;
    }
    let mut usage_error: c_int = 0;
    // SAFETY: `options` is valid; the progress data points at `progress_ref`, which lives on
    // this stack frame until after GDALVectorTranslate returns; `source` is an open dataset
    // used by this thread only; the returned dataset is closed here and nowhere else.
    let ok = unsafe {
        gdal_sys::GDALVectorTranslateOptionsSetProgress(
            options,
            Some(progress_callback),
            &mut progress_ref as *mut &mut dyn FnMut(f64) as *mut c_void,
        );
        let mut source_handle = source.c_dataset();
        let out = gdal_sys::GDALVectorTranslate(
            c_dest.as_ptr(),
            std::ptr::null_mut(),
            1,
            &mut source_handle,
            options,
            &mut usage_error,
        );
        gdal_sys::GDALVectorTranslateOptionsFree(options);
        if out.is_null() {
            false
        } else {
            gdal_sys::GDALClose(out);
            true
        }
    };
    if usage_error != 0 {
        capture.note("GDAL reported a usage error in the import options".into());
        return false;
    }
    ok
}

/// GDAL's progress callback: hands the fraction to the Rust closure; never cancels.
unsafe extern "C" fn progress_callback(
    complete: f64,
    _message: *const c_char,
    data: *mut c_void,
) -> c_int {
    if data.is_null() {
        return 1;
    }
    // SAFETY: `data` is the `&mut &mut dyn FnMut(f64)` set in `translate`, alive during the
    // translation, and GDAL calls back on the translating thread only.
    let callback = unsafe { &mut *(data as *mut &mut dyn FnMut(f64)) };
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| callback(complete)));
    1
}

fn set_thread_config(key: &str, value: Option<&str>) {
    let Ok(c_key) = CString::new(key) else { return };
    let c_value = value.and_then(|v| CString::new(v).ok());
    // SAFETY: valid C strings (or NULL to unset); GDAL copies them.
    unsafe {
        gdal_sys::CPLSetThreadLocalConfigOption(
            c_key.as_ptr(),
            c_value.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
        );
    }
}

/// Messages GDAL reports on this thread while the capture is pushed.
struct ErrorCapture {
    state: Box<std::cell::RefCell<CaptureState>>,
}

/// Messages kept from the start and from the end of an attempt (a broken file can produce
/// thousands; the repair rules' triggers come at the end).
const KEPT_HEAD: usize = 30;
const KEPT_TAIL: usize = 30;

#[derive(Default)]
struct CaptureState {
    head: Vec<String>,
    tail: std::collections::VecDeque<String>,
    dropped: usize,
    errors: usize,
}

impl CaptureState {
    fn push(&mut self, message: String) {
        if self.head.len() < KEPT_HEAD {
            self.head.push(message);
            return;
        }
        self.tail.push_back(message);
        if self.tail.len() > KEPT_TAIL {
            self.tail.pop_front();
            self.dropped += 1;
        }
    }
}

impl ErrorCapture {
    /// Installs the handler on this thread (popped on drop).
    fn push() -> Self {
        prepare();
        let state = Box::new(std::cell::RefCell::new(CaptureState::default()));
        // SAFETY: the user data points into the box, which lives until `drop` pops the handler.
        unsafe {
            gdal_sys::CPLPushErrorHandlerEx(
                Some(error_handler),
                &*state as *const std::cell::RefCell<CaptureState> as *mut c_void,
            );
        }
        ErrorCapture { state }
    }

    /// Adds a message of our own (counted as an error).
    fn note(&self, message: String) {
        if let Ok(mut state) = self.state.try_borrow_mut() {
            state.push(message);
            state.errors += 1;
        }
    }

    fn has_errors(&self) -> bool {
        self.state
            .try_borrow()
            .map(|s| s.errors > 0)
            .unwrap_or(true)
    }

    /// The messages so far; starts afresh.
    fn take(&self) -> Vec<String> {
        match self.state.try_borrow_mut() {
            Ok(mut state) => {
                let mut messages = std::mem::take(&mut state.head);
                if state.dropped > 0 {
                    messages.push(format!("({} more messages)", state.dropped));
                }
                messages.extend(state.tail.drain(..));
                *state = CaptureState::default();
                messages
            }
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for ErrorCapture {
    fn drop(&mut self) {
        // SAFETY: pops the handler pushed in `push` on this same thread.
        unsafe { gdal_sys::CPLPopErrorHandler() };
    }
}

/// Keeps warnings and errors (errors counted); debug output is dropped. Never panics across
/// the FFI boundary.
unsafe extern "C" fn error_handler(
    class: gdal_sys::CPLErr::Type,
    number: c_int,
    message: *const c_char,
) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: GDAL gives the user data pushed with this handler (or NULL).
        let data = unsafe { gdal_sys::CPLGetErrorHandlerUserData() };
        if data.is_null() || class < gdal_sys::CPLErr::CE_Warning {
            return;
        }
        let text = if message.is_null() {
            String::new()
        } else {
            // SAFETY: GDAL passes a NUL-terminated string valid for this call.
            unsafe { CStr::from_ptr(message) }
                .to_string_lossy()
                .into_owned()
        };
        // SAFETY: the pointer is the capture's boxed RefCell, alive while the handler is pushed.
        let state = unsafe { &*(data as *const std::cell::RefCell<CaptureState>) };
        if let Ok(mut state) = state.try_borrow_mut() {
            let label = if class >= gdal_sys::CPLErr::CE_Failure {
                state.errors += 1;
                "ERROR"
            } else {
                "Warning"
            };
            state.push(format!("{label} {number}: {text}"));
        }
    }));
}
