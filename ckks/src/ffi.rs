//! The one module of SEER that contains `unsafe` code.
//!
//! `sealy` 0.2.0 builds Microsoft SEAL 4.0 (with its C API, `libsealc`) and links it, but
//! keeps its ciphertext and context handles private and omits CKKS rescaling, rotation,
//! scales and levels. The SEAL C API functions are all present in the static library that
//! `sealy` links, so this module declares the ones SEER needs (`extern "C"`), owns every
//! SEAL object it creates through them, and exposes safe wrappers.
//!
//! Safety argument, once for the whole module:
//! - every handle type below owns exactly one SEAL object, created by a `*_Create*`
//!   function and destroyed exactly once in `Drop`; handles are never null (checked at
//!   creation) and never shared between two owners (clones call SEAL's copy constructors);
//! - SEAL's C API catches the C++ exceptions it documents and turns them into `HRESULT`
//!   codes, which [`check`] maps to [`FfiError`]; callers in this crate validate levels,
//!   scales, sizes and key presence *before* calling, so the error path is a backstop;
//! - all SEAL objects used here are safe to read from several threads at once (SEAL's
//!   evaluator, encoder and context are immutable after construction and allocate from
//!   thread-safe memory pools), and mutation goes through `&mut self`, hence `Send`/`Sync`;
//! - buffers passed to SEAL are Rust slices whose length is passed alongside;
//! - SEAL's loaders trust the sizes they read (a crafted ciphertext made one write past its
//!   buffer), so they accept only [`Checked`] bytes, which `seal_format` has parsed in full
//!   against the context, uncompressed;
//! - zstd (the library inside SEAL's build) decompresses through one owned stream whose input
//!   and output buffers are Rust slices with their lengths, its output bounded by the caller.
//!
//! Each wrapper is exercised against plaintext arithmetic by the tests of the modules that
//! use it (`evaluator`, `keys`, `serialize`) and by the tests at the bottom of this file.
#![allow(unsafe_code)]
#![allow(
    clippy::unnecessary_cast,
    reason = "HRESULT is a C long: 64 bits here, 32 on other platforms"
)]
// Secret-key wrappers are unused in builds without the `secret-key` feature.
#![cfg_attr(not(any(test, feature = "secret-key")), allow(dead_code))]

use std::ffi::{c_char, c_int, c_long, c_void};
use std::ptr::{NonNull, null_mut};

use crate::seal_format::Checked;

/// SEAL's 256-bit hash identifying one level of the modulus-switching chain.
pub(crate) type ParmsId = [u64; 4];

/// Compression mode for SEAL's serialization (`seal::compr_mode_type::zstd`).
pub(crate) const COMPR_ZSTD: u8 = 2;

/// No compression (`seal::compr_mode_type::none`): larger, but loading is a copy plus
/// SEAL's validation.
pub(crate) const COMPR_NONE: u8 = 0;

type HResult = c_long;

const S_OK: HResult = 0;
const E_POINTER: HResult = 0x8000_4003_u32 as i32 as HResult;
const E_INVALIDARG: HResult = 0x8007_0057_u32 as i32 as HResult;
const E_OUTOFMEMORY: HResult = 0x8007_000E_u32 as i32 as HResult;
const E_UNEXPECTED: HResult = 0x8000_FFFF_u32 as i32 as HResult;
const COR_E_IO: HResult = 0x8013_1620_u32 as i32 as HResult;
const COR_E_INVALIDOPERATION: HResult = 0x8013_1509_u32 as i32 as HResult;

/// A failed SEAL C API call: which function, and SEAL's result code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FfiError {
    /// The SEAL C API function that failed.
    pub function: &'static str,
    /// The raw `HRESULT` it returned.
    pub code: i64,
}

impl FfiError {
    /// SEAL's meaning of the result code.
    pub fn meaning(&self) -> &'static str {
        // HRESULTs are 32-bit values sign-extended into a C long.
        match self.code as HResult {
            E_POINTER => "null pointer",
            E_INVALIDARG => "invalid argument",
            E_OUTOFMEMORY => "out of memory",
            E_UNEXPECTED => "unexpected error",
            COR_E_IO => "input/output error (malformed or truncated data)",
            COR_E_INVALIDOPERATION => "invalid operation",
            _ => "unknown error",
        }
    }
}

impl std::fmt::Display for FfiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed: {} (0x{:08x})",
            self.function,
            self.meaning(),
            self.code as u32
        )
    }
}

impl std::error::Error for FfiError {}

fn check(function: &'static str, code: HResult) -> Result<(), FfiError> {
    if code == S_OK {
        Ok(())
    } else {
        Err(FfiError {
            function,
            code: code as i64,
        })
    }
}

fn non_null(function: &'static str, ptr: *mut c_void) -> Result<NonNull<c_void>, FfiError> {
    NonNull::new(ptr).ok_or(FfiError {
        function,
        code: E_POINTER as i64,
    })
}

// The SEAL C API, as declared in SEAL/native/src/seal/c/*.h (SEAL 4.0.0).
unsafe extern "C" {
    fn SEALContext_Create(
        params: *mut c_void,
        expand_mod_chain: bool,
        sec_level: c_int,
        context: *mut *mut c_void,
    ) -> HResult;
    fn SEALContext_Destroy(thisptr: *mut c_void) -> HResult;
    fn SEALContext_ParametersSet(thisptr: *mut c_void, params_set: *mut bool) -> HResult;
    fn SEALContext_ParameterErrorMessage(
        thisptr: *mut c_void,
        outstr: *mut c_char,
        length: *mut u64,
    ) -> HResult;
    fn SEALContext_KeyContextData(thisptr: *mut c_void, context_data: *mut *mut c_void) -> HResult;

    fn ContextData_NextContextData(thisptr: *mut c_void, next_data: *mut *mut c_void) -> HResult;
    fn ContextData_ChainIndex(thisptr: *mut c_void, index: *mut u64) -> HResult;
    fn ContextData_Parms(thisptr: *mut c_void, parms: *mut *mut c_void) -> HResult;
    fn ContextData_TotalCoeffModulusBitCount(
        thisptr: *mut c_void,
        bit_count: *mut c_int,
    ) -> HResult;

    fn EncParams_GetParmsId(thisptr: *mut c_void, parms_id: *mut u64) -> HResult;
    fn EncParams_Destroy(thisptr: *mut c_void) -> HResult;

    fn Plaintext_Create1(pool: *mut c_void, plaintext: *mut *mut c_void) -> HResult;
    fn Plaintext_Destroy(thisptr: *mut c_void) -> HResult;
    fn Plaintext_Scale(thisptr: *mut c_void, scale: *mut f64) -> HResult;

    fn Ciphertext_Create1(pool: *mut c_void, cipher: *mut *mut c_void) -> HResult;
    fn Ciphertext_Create2(copy: *mut c_void, cipher: *mut *mut c_void) -> HResult;
    fn Ciphertext_Destroy(thisptr: *mut c_void) -> HResult;
    fn Ciphertext_Size(thisptr: *mut c_void, size: *mut u64) -> HResult;
    fn Ciphertext_ParmsId(thisptr: *mut c_void, parms_id: *mut u64) -> HResult;
    fn Ciphertext_Scale(thisptr: *mut c_void, scale: *mut f64) -> HResult;
    fn Ciphertext_SetScale(thisptr: *mut c_void, scale: f64) -> HResult;
    fn Ciphertext_IsNTTForm(thisptr: *mut c_void, is_ntt_form: *mut bool) -> HResult;
    fn Ciphertext_IsTransparent(thisptr: *mut c_void, result: *mut bool) -> HResult;
    fn Ciphertext_SaveSize(thisptr: *mut c_void, compr_mode: u8, result: *mut i64) -> HResult;
    fn Ciphertext_Save(
        thisptr: *mut c_void,
        outptr: *mut u8,
        size: u64,
        compr_mode: u8,
        out_bytes: *mut i64,
    ) -> HResult;
    fn Ciphertext_Load(
        thisptr: *mut c_void,
        context: *mut c_void,
        inptr: *mut u8,
        size: u64,
        in_bytes: *mut i64,
    ) -> HResult;

    fn CKKSEncoder_Create(context: *mut c_void, ckks_encoder: *mut *mut c_void) -> HResult;
    fn CKKSEncoder_Destroy(thisptr: *mut c_void) -> HResult;
    fn CKKSEncoder_SlotCount(thisptr: *mut c_void, slot_count: *mut u64) -> HResult;
    fn CKKSEncoder_Encode1(
        thisptr: *mut c_void,
        value_count: u64,
        values: *mut f64,
        parms_id: *mut u64,
        scale: f64,
        destination: *mut c_void,
        pool: *mut c_void,
    ) -> HResult;
    fn CKKSEncoder_Encode3(
        thisptr: *mut c_void,
        value: f64,
        parms_id: *mut u64,
        scale: f64,
        destination: *mut c_void,
        pool: *mut c_void,
    ) -> HResult;
    fn CKKSEncoder_Decode1(
        thisptr: *mut c_void,
        plain: *mut c_void,
        value_count: *mut u64,
        values: *mut f64,
        pool: *mut c_void,
    ) -> HResult;

    fn KeyGenerator_Create1(context: *mut c_void, key_generator: *mut *mut c_void) -> HResult;
    fn KeyGenerator_Create2(
        context: *mut c_void,
        secret_key: *mut c_void,
        key_generator: *mut *mut c_void,
    ) -> HResult;
    fn KeyGenerator_Destroy(thisptr: *mut c_void) -> HResult;
    fn KeyGenerator_SecretKey(thisptr: *mut c_void, secret_key: *mut *mut c_void) -> HResult;
    fn KeyGenerator_CreatePublicKey(
        thisptr: *mut c_void,
        save_seed: bool,
        public_key: *mut *mut c_void,
    ) -> HResult;
    fn KeyGenerator_CreateRelinKeys(
        thisptr: *mut c_void,
        save_seed: bool,
        relin_keys: *mut *mut c_void,
    ) -> HResult;
    fn KeyGenerator_CreateGaloisKeysFromSteps(
        thisptr: *mut c_void,
        count: u64,
        steps: *mut c_int,
        save_seed: bool,
        galois_keys: *mut *mut c_void,
    ) -> HResult;

    fn SecretKey_Create1(secret_key: *mut *mut c_void) -> HResult;
    fn SecretKey_Destroy(thisptr: *mut c_void) -> HResult;
    fn SecretKey_SaveSize(thisptr: *mut c_void, compr_mode: u8, result: *mut i64) -> HResult;
    fn SecretKey_Save(
        thisptr: *mut c_void,
        outptr: *mut u8,
        size: u64,
        compr_mode: u8,
        out_bytes: *mut i64,
    ) -> HResult;
    fn SecretKey_Load(
        thisptr: *mut c_void,
        context: *mut c_void,
        inptr: *mut u8,
        size: u64,
        in_bytes: *mut i64,
    ) -> HResult;

    fn PublicKey_Create1(public_key: *mut *mut c_void) -> HResult;
    fn PublicKey_Destroy(thisptr: *mut c_void) -> HResult;
    fn PublicKey_SaveSize(thisptr: *mut c_void, compr_mode: u8, result: *mut i64) -> HResult;
    fn PublicKey_Save(
        thisptr: *mut c_void,
        outptr: *mut u8,
        size: u64,
        compr_mode: u8,
        out_bytes: *mut i64,
    ) -> HResult;
    fn PublicKey_Load(
        thisptr: *mut c_void,
        context: *mut c_void,
        inptr: *mut u8,
        size: u64,
        in_bytes: *mut i64,
    ) -> HResult;

    fn KSwitchKeys_Create1(kswitch_keys: *mut *mut c_void) -> HResult;
    fn KSwitchKeys_Destroy(thisptr: *mut c_void) -> HResult;
    fn KSwitchKeys_SaveSize(thisptr: *mut c_void, compr_mode: u8, result: *mut i64) -> HResult;
    fn KSwitchKeys_Save(
        thisptr: *mut c_void,
        outptr: *mut u8,
        size: u64,
        compr_mode: u8,
        out_bytes: *mut i64,
    ) -> HResult;
    fn KSwitchKeys_Load(
        thisptr: *mut c_void,
        context: *mut c_void,
        inptr: *mut u8,
        size: u64,
        in_bytes: *mut i64,
    ) -> HResult;

    fn Encryptor_Create(
        context: *mut c_void,
        public_key: *mut c_void,
        secret_key: *mut c_void,
        encryptor: *mut *mut c_void,
    ) -> HResult;
    fn Encryptor_Destroy(thisptr: *mut c_void) -> HResult;
    fn Encryptor_Encrypt(
        thisptr: *mut c_void,
        plaintext: *mut c_void,
        destination: *mut c_void,
        pool: *mut c_void,
    ) -> HResult;

    fn Decryptor_Create(
        context: *mut c_void,
        secret_key: *mut c_void,
        decryptor: *mut *mut c_void,
    ) -> HResult;
    fn Decryptor_Destroy(thisptr: *mut c_void) -> HResult;
    fn Decryptor_Decrypt(
        thisptr: *mut c_void,
        encrypted: *mut c_void,
        destination: *mut c_void,
    ) -> HResult;

    fn Evaluator_Create(context: *mut c_void, evaluator: *mut *mut c_void) -> HResult;
    fn Evaluator_Destroy(thisptr: *mut c_void) -> HResult;
    fn Evaluator_Negate(
        thisptr: *mut c_void,
        encrypted: *mut c_void,
        destination: *mut c_void,
    ) -> HResult;
    fn Evaluator_Add(
        thisptr: *mut c_void,
        encrypted1: *mut c_void,
        encrypted2: *mut c_void,
        destination: *mut c_void,
    ) -> HResult;
    fn Evaluator_Sub(
        thisptr: *mut c_void,
        encrypted1: *mut c_void,
        encrypted2: *mut c_void,
        destination: *mut c_void,
    ) -> HResult;
    fn Evaluator_AddPlain(
        thisptr: *mut c_void,
        encrypted: *mut c_void,
        plain: *mut c_void,
        destination: *mut c_void,
    ) -> HResult;
    fn Evaluator_SubPlain(
        thisptr: *mut c_void,
        encrypted: *mut c_void,
        plain: *mut c_void,
        destination: *mut c_void,
    ) -> HResult;
    fn Evaluator_Multiply(
        thisptr: *mut c_void,
        encrypted1: *mut c_void,
        encrypted2: *mut c_void,
        destination: *mut c_void,
        pool: *mut c_void,
    ) -> HResult;
    fn Evaluator_Square(
        thisptr: *mut c_void,
        encrypted: *mut c_void,
        destination: *mut c_void,
        pool: *mut c_void,
    ) -> HResult;
    fn Evaluator_MultiplyPlain(
        thisptr: *mut c_void,
        encrypted: *mut c_void,
        plain: *mut c_void,
        destination: *mut c_void,
        pool: *mut c_void,
    ) -> HResult;
    fn Evaluator_Relinearize(
        thisptr: *mut c_void,
        encrypted: *mut c_void,
        relin_keys: *mut c_void,
        destination: *mut c_void,
        pool: *mut c_void,
    ) -> HResult;
    fn Evaluator_RescaleToNext(
        thisptr: *mut c_void,
        encrypted: *mut c_void,
        destination: *mut c_void,
        pool: *mut c_void,
    ) -> HResult;
    fn Evaluator_ModSwitchTo1(
        thisptr: *mut c_void,
        encrypted: *mut c_void,
        parms_id: *mut u64,
        destination: *mut c_void,
        pool: *mut c_void,
    ) -> HResult;
    fn Evaluator_RotateVector(
        thisptr: *mut c_void,
        encrypted: *mut c_void,
        steps: c_int,
        galois_keys: *mut c_void,
        destination: *mut c_void,
        pool: *mut c_void,
    ) -> HResult;
}

/// zstd's streaming buffers (`ZSTD_inBuffer`, `ZSTD_outBuffer`).
#[repr(C)]
struct ZstdInBuffer {
    src: *const c_void,
    size: usize,
    pos: usize,
}

#[repr(C)]
struct ZstdOutBuffer {
    dst: *mut c_void,
    size: usize,
    pos: usize,
}

/// `ZSTD_d_windowLogMax`.
const ZSTD_D_WINDOW_LOG_MAX: c_int = 100;
/// The largest zstd window a payload may declare: 16 MiB. SEAL compresses at zstd's default
/// level, whose window is at most 2 MiB; without this bound a frame could make the decoder
/// allocate up to zstd's default limit of 128 MiB whatever its content.
const ZSTD_WINDOW_LOG_MAX: c_int = 24;
/// Decompressed bytes produced per call into the stream (zstd's `ZSTD_DStreamOutSize`).
const ZSTD_CHUNK: usize = 128 * 1024;

// The zstd library SEAL's build compiles into `libseal` (SEAL_USE_ZSTD): the decoder SEAL
// itself runs, called here so that SEER decompresses a payload, checks it, and hands SEAL
// the uncompressed bytes (see `seal_format`).
unsafe extern "C" {
    fn ZSTD_createDStream() -> *mut c_void;
    fn ZSTD_freeDStream(zds: *mut c_void) -> usize;
    fn ZSTD_DCtx_setParameter(dctx: *mut c_void, param: c_int, value: c_int) -> usize;
    fn ZSTD_decompressStream(
        zds: *mut c_void,
        output: *mut ZstdOutBuffer,
        input: *mut ZstdInBuffer,
    ) -> usize;
    fn ZSTD_isError(code: usize) -> std::ffi::c_uint;
    fn ZSTD_getErrorName(code: usize) -> *const c_char;
}

/// Why a zstd payload did not decompress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inflate {
    /// More than the limit would come out (the count produced when it stopped: limit + 1).
    TooLarge(usize),
    /// zstd refused the data (its error name).
    Corrupt(String),
    /// The input ended inside the frame.
    Truncated,
    /// Bytes follow the end of the frame.
    Trailing(usize),
}

/// An owned zstd decompression stream.
struct ZstdStream(NonNull<c_void>);

impl Drop for ZstdStream {
    fn drop(&mut self) {
        // SAFETY: created by ZSTD_createDStream, freed exactly once here.
        let _ = unsafe { ZSTD_freeDStream(self.0.as_ptr()) };
    }
}

fn zstd_error(code: usize) -> Option<String> {
    // SAFETY: ZSTD_isError and ZSTD_getErrorName take any value; the name is a static,
    // NUL-terminated string owned by the library.
    unsafe {
        if ZSTD_isError(code) == 0 {
            return None;
        }
        let name = ZSTD_getErrorName(code);
        Some(if name.is_null() {
            format!("zstd error {code}")
        } else {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        })
    }
}

/// Decompresses the one zstd frame that spans all of `input`, producing at most `limit`
/// bytes (it stops one byte past the limit, whatever the frame claims). With `secret`, the
/// intermediate buffer is wiped (the output is the caller's to wipe).
pub(crate) fn zstd_decompress(
    input: &[u8],
    limit: usize,
    secret: bool,
) -> Result<Vec<u8>, Inflate> {
    // SAFETY: a fresh stream, owned by the guard below.
    let stream = NonNull::new(unsafe { ZSTD_createDStream() })
        .map(ZstdStream)
        .ok_or_else(|| Inflate::Corrupt("zstd could not allocate a stream".into()))?;
    // SAFETY: a live stream; a documented parameter and value.
    let set = unsafe {
        ZSTD_DCtx_setParameter(
            stream.0.as_ptr(),
            ZSTD_D_WINDOW_LOG_MAX,
            ZSTD_WINDOW_LOG_MAX,
        )
    };
    if let Some(error) = zstd_error(set) {
        return Err(Inflate::Corrupt(error));
    }
    let mut chunk = vec![0u8; ZSTD_CHUNK];
    let mut out = Vec::new();
    let mut source = ZstdInBuffer {
        src: input.as_ptr().cast(),
        size: input.len(),
        pos: 0,
    };
    let result = loop {
        // Never ask for more than one byte past the limit.
        let room = (limit.saturating_add(1) - out.len()).min(chunk.len());
        let mut sink = ZstdOutBuffer {
            dst: chunk.as_mut_ptr().cast(),
            size: room,
            pos: 0,
        };
        // SAFETY: `source` describes `input` (read only), `sink` the first `room` bytes of
        // `chunk`; zstd reads and writes within them and advances `pos`.
        let pending = unsafe { ZSTD_decompressStream(stream.0.as_ptr(), &mut sink, &mut source) };
        if let Some(error) = zstd_error(pending) {
            break Err(Inflate::Corrupt(error));
        }
        out.extend_from_slice(&chunk[..sink.pos.min(room)]);
        if out.len() > limit {
            break Err(Inflate::TooLarge(out.len()));
        }
        if pending == 0 {
            // The frame is complete.
            break if source.pos == source.size {
                Ok(())
            } else {
                Err(Inflate::Trailing(source.size - source.pos))
            };
        }
        if source.pos == source.size && sink.pos < sink.size {
            break Err(Inflate::Truncated);
        }
    };
    if secret {
        zeroize::Zeroize::zeroize(&mut chunk);
    }
    match result {
        Ok(()) => Ok(out),
        Err(error) => {
            if secret {
                zeroize::Zeroize::zeroize(&mut out);
            }
            Err(error)
        }
    }
}

/// Declares a handle type that owns one SEAL object and destroys it on drop.
macro_rules! handle {
    ($(#[$doc:meta])* $name:ident, $destroy:ident) => {
        $(#[$doc])*
        pub(crate) struct $name(NonNull<c_void>);

        // SAFETY: see the module documentation; SEAL objects are safe to send between
        // threads and to read concurrently, and mutation requires `&mut self`.
        unsafe impl Send for $name {}
        // SAFETY: as above.
        unsafe impl Sync for $name {}

        impl $name {
            fn ptr(&self) -> *mut c_void {
                self.0.as_ptr()
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: the handle owns the object and this is its only destruction.
                // A failure here cannot be reported; SEAL's destructors do not fail.
                let _ = unsafe { $destroy(self.ptr()) };
            }
        }
    };
}

handle!(
    /// An owned `seal::SEALContext`.
    RawContext,
    SEALContext_Destroy
);
handle!(
    /// An owned `seal::Plaintext`.
    RawPlaintext,
    Plaintext_Destroy
);
handle!(
    /// An owned `seal::Ciphertext`.
    RawCiphertext,
    Ciphertext_Destroy
);
handle!(
    /// An owned `seal::CKKSEncoder`.
    RawEncoder,
    CKKSEncoder_Destroy
);
handle!(
    /// An owned `seal::Evaluator`.
    RawEvaluator,
    Evaluator_Destroy
);
handle!(
    /// An owned `seal::KeyGenerator`. Holds a copy of the secret key.
    RawKeyGenerator,
    KeyGenerator_Destroy
);
handle!(
    /// An owned `seal::SecretKey`. SEAL allocates its data from a memory pool created with
    /// `clear_on_destruction`, so the key material is overwritten when it is destroyed.
    RawSecretKey,
    SecretKey_Destroy
);
handle!(
    /// An owned `seal::PublicKey`.
    RawPublicKey,
    PublicKey_Destroy
);
handle!(
    /// An owned `seal::KSwitchKeys` (relinearization or Galois keys).
    RawKSwitchKeys,
    KSwitchKeys_Destroy
);
handle!(
    /// An owned `seal::Encryptor` holding a public key.
    RawEncryptor,
    Encryptor_Destroy
);
handle!(
    /// An owned `seal::Decryptor`. Holds a copy of the secret key in cleared-on-destruction
    /// memory.
    RawDecryptor,
    Decryptor_Destroy
);

/// Saves a SEAL object with compression mode `compr_mode` into a fresh buffer.
fn save_with(
    name_size: &'static str,
    name_save: &'static str,
    compr_mode: u8,
    ptr: *mut c_void,
    save_size: unsafe extern "C" fn(*mut c_void, u8, *mut i64) -> HResult,
    save: unsafe extern "C" fn(*mut c_void, *mut u8, u64, u8, *mut i64) -> HResult,
) -> Result<Vec<u8>, FfiError> {
    let mut bound: i64 = 0;
    // SAFETY: `ptr` is a live SEAL object of the type `save_size` expects.
    check(name_size, unsafe { save_size(ptr, compr_mode, &mut bound) })?;
    let bound = usize::try_from(bound).map_err(|_| FfiError {
        function: name_size,
        code: E_UNEXPECTED as i64,
    })?;
    let mut buffer = vec![0u8; bound];
    let mut written: i64 = 0;
    // SAFETY: the buffer has `bound` writable bytes and that length is passed.
    check(name_save, unsafe {
        save(
            ptr,
            buffer.as_mut_ptr(),
            bound as u64,
            compr_mode,
            &mut written,
        )
    })?;
    let written = usize::try_from(written)
        .ok()
        .filter(|w| *w <= bound)
        .ok_or(FfiError {
            function: name_save,
            code: E_UNEXPECTED as i64,
        })?;
    buffer.truncate(written);
    Ok(buffer)
}

/// Loads SEAL bytes into `ptr`, requiring that the whole input is consumed. Only bytes that
/// [`seal_format::check`](crate::seal_format::check) has parsed in full against the context
/// reach SEAL: its loaders trust the sizes they read (see that module).
fn load_with(
    name: &'static str,
    ptr: *mut c_void,
    context: &RawContext,
    checked: &Checked<'_>,
    load: unsafe extern "C" fn(*mut c_void, *mut c_void, *mut u8, u64, *mut i64) -> HResult,
) -> Result<(), FfiError> {
    let bytes = checked.as_bytes();
    let mut read: i64 = 0;
    // SAFETY: SEAL only reads `bytes.len()` bytes from the pointer (the C API takes a
    // non-const pointer but `load` never writes through it).
    check(name, unsafe {
        load(
            ptr,
            context.ptr(),
            bytes.as_ptr().cast_mut(),
            bytes.len() as u64,
            &mut read,
        )
    })?;
    if usize::try_from(read).ok() != Some(bytes.len()) {
        return Err(FfiError {
            function: name,
            code: COR_E_IO as i64,
        });
    }
    Ok(())
}

/// Runs a SEAL constructor of the form `f(.., *mut *mut c_void)`.
fn create(
    name: &'static str,
    f: impl FnOnce(*mut *mut c_void) -> HResult,
) -> Result<NonNull<c_void>, FfiError> {
    let mut out: *mut c_void = null_mut();
    check(name, f(&mut out))?;
    non_null(name, out)
}

/// One level of the modulus-switching chain, from the key level down.
pub(crate) struct ChainLevel {
    pub parms_id: ParmsId,
    pub chain_index: u64,
    pub total_bits: u32,
}

impl RawContext {
    /// Creates a SEAL context; `sec_level` is SEAL's `sec_level_type` (128 for TC128).
    pub fn new(params: &sealy::EncryptionParameters, sec_level: i32) -> Result<Self, FfiError> {
        let ptr = create("SEALContext_Create", |out| {
            // SAFETY: `params` is a live sealy object; SEAL copies what it needs.
            unsafe { SEALContext_Create(params.get_handle(), true, sec_level, out) }
        })?;
        Ok(Self(ptr))
    }

    /// Whether SEAL accepted the parameters, and its reason when it did not.
    pub fn parameter_error(&self) -> Result<Option<String>, FfiError> {
        let mut set = false;
        // SAFETY: live context, valid out pointer.
        check("SEALContext_ParametersSet", unsafe {
            SEALContext_ParametersSet(self.ptr(), &mut set)
        })?;
        if set {
            return Ok(None);
        }
        let mut len: u64 = 0;
        // SAFETY: a null buffer asks for the length only.
        check("SEALContext_ParameterErrorMessage", unsafe {
            SEALContext_ParameterErrorMessage(self.ptr(), null_mut(), &mut len)
        })?;
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0) + 1];
        let mut len2 = buf.len() as u64;
        // SAFETY: `buf` has `len2` writable bytes.
        check("SEALContext_ParameterErrorMessage", unsafe {
            SEALContext_ParameterErrorMessage(self.ptr(), buf.as_mut_ptr().cast(), &mut len2)
        })?;
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()))
    }

    /// The modulus-switching chain, from the key level (with the special prime) down to the
    /// last level.
    pub fn chain(&self) -> Result<Vec<ChainLevel>, FfiError> {
        let mut data: *mut c_void = null_mut();
        // SAFETY: the returned pointer is borrowed from the context, which outlives its use.
        check("SEALContext_KeyContextData", unsafe {
            SEALContext_KeyContextData(self.ptr(), &mut data)
        })?;
        let mut levels = Vec::new();
        while !data.is_null() {
            let mut chain_index: u64 = 0;
            let mut bits: c_int = 0;
            let mut parms_ptr: *mut c_void = null_mut();
            let mut parms_id: ParmsId = [0; 4];
            // SAFETY: `data` is a live ContextData borrowed from the context. `ContextData_Parms`
            // returns a new EncryptionParameters copy that we destroy right after use.
            unsafe {
                check(
                    "ContextData_ChainIndex",
                    ContextData_ChainIndex(data, &mut chain_index),
                )?;
                check(
                    "ContextData_TotalCoeffModulusBitCount",
                    ContextData_TotalCoeffModulusBitCount(data, &mut bits),
                )?;
                check("ContextData_Parms", ContextData_Parms(data, &mut parms_ptr))?;
                let parms = non_null("ContextData_Parms", parms_ptr)?;
                let id = check(
                    "EncParams_GetParmsId",
                    EncParams_GetParmsId(parms.as_ptr(), parms_id.as_mut_ptr()),
                );
                let _ = EncParams_Destroy(parms.as_ptr());
                id?;
                let mut next: *mut c_void = null_mut();
                check(
                    "ContextData_NextContextData",
                    ContextData_NextContextData(data, &mut next),
                )?;
                levels.push(ChainLevel {
                    parms_id,
                    chain_index,
                    total_bits: u32::try_from(bits).unwrap_or(0),
                });
                data = next;
            }
        }
        Ok(levels)
    }
}

impl RawPlaintext {
    /// An empty plaintext.
    pub fn new() -> Result<Self, FfiError> {
        // SAFETY: a null pool selects SEAL's global memory pool.
        create("Plaintext_Create1", |out| unsafe {
            Plaintext_Create1(null_mut(), out)
        })
        .map(Self)
    }

    /// The scale recorded in the plaintext.
    pub fn scale(&self) -> Result<f64, FfiError> {
        let mut scale = 0.0;
        // SAFETY: live object, valid out pointer.
        check("Plaintext_Scale", unsafe {
            Plaintext_Scale(self.ptr(), &mut scale)
        })?;
        Ok(scale)
    }
}

impl RawCiphertext {
    /// An empty ciphertext.
    pub fn new() -> Result<Self, FfiError> {
        // SAFETY: a null pool selects SEAL's global memory pool.
        create("Ciphertext_Create1", |out| unsafe {
            Ciphertext_Create1(null_mut(), out)
        })
        .map(Self)
    }

    /// A deep copy.
    pub fn try_clone(&self) -> Result<Self, FfiError> {
        // SAFETY: copy-constructs from a live object.
        create("Ciphertext_Create2", |out| unsafe {
            Ciphertext_Create2(self.ptr(), out)
        })
        .map(Self)
    }

    /// Number of polynomials (2 after relinearization, 3 after a raw multiplication).
    pub fn size(&self) -> Result<u64, FfiError> {
        let mut size = 0;
        // SAFETY: live object, valid out pointer.
        check("Ciphertext_Size", unsafe {
            Ciphertext_Size(self.ptr(), &mut size)
        })?;
        Ok(size)
    }

    /// The chain level of the ciphertext.
    pub fn parms_id(&self) -> Result<ParmsId, FfiError> {
        let mut id: ParmsId = [0; 4];
        // SAFETY: live object; SEAL writes exactly four words.
        check("Ciphertext_ParmsId", unsafe {
            Ciphertext_ParmsId(self.ptr(), id.as_mut_ptr())
        })?;
        Ok(id)
    }

    /// The CKKS scale of the ciphertext.
    pub fn scale(&self) -> Result<f64, FfiError> {
        let mut scale = 0.0;
        // SAFETY: live object, valid out pointer.
        check("Ciphertext_Scale", unsafe {
            Ciphertext_Scale(self.ptr(), &mut scale)
        })?;
        Ok(scale)
    }

    /// Overwrites the recorded scale (used to snap scales that differ by rounding only).
    pub fn set_scale(&mut self, scale: f64) -> Result<(), FfiError> {
        // SAFETY: live object, exclusive access.
        check("Ciphertext_SetScale", unsafe {
            Ciphertext_SetScale(self.ptr(), scale)
        })
    }

    /// Whether the ciphertext is in NTT form (CKKS ciphertexts always are).
    pub fn is_ntt_form(&self) -> Result<bool, FfiError> {
        let mut ntt = false;
        // SAFETY: live object, valid out pointer.
        check("Ciphertext_IsNTTForm", unsafe {
            Ciphertext_IsNTTForm(self.ptr(), &mut ntt)
        })?;
        Ok(ntt)
    }

    /// Whether the ciphertext is transparent (its mask is zero, so it hides nothing).
    pub fn is_transparent(&self) -> Result<bool, FfiError> {
        let mut transparent = false;
        // SAFETY: live object, valid out pointer.
        check("Ciphertext_IsTransparent", unsafe {
            Ciphertext_IsTransparent(self.ptr(), &mut transparent)
        })?;
        Ok(transparent)
    }

    /// SEAL's serialization with zstd compression.
    pub fn save(&self) -> Result<Vec<u8>, FfiError> {
        self.save_mode(COMPR_ZSTD)
    }

    /// SEAL's serialization without compression.
    pub fn save_uncompressed(&self) -> Result<Vec<u8>, FfiError> {
        self.save_mode(COMPR_NONE)
    }

    fn save_mode(&self, compr_mode: u8) -> Result<Vec<u8>, FfiError> {
        save_with(
            "Ciphertext_SaveSize",
            "Ciphertext_Save",
            compr_mode,
            self.ptr(),
            Ciphertext_SaveSize,
            Ciphertext_Save,
        )
    }

    /// Loads and validates (SEAL's `Ciphertext::load`) against `context`.
    pub fn load(context: &RawContext, bytes: &Checked<'_>) -> Result<Self, FfiError> {
        let ct = Self::new()?;
        load_with("Ciphertext_Load", ct.ptr(), context, bytes, Ciphertext_Load)?;
        Ok(ct)
    }
}

impl RawEncoder {
    /// A CKKS encoder for `context`.
    pub fn new(context: &RawContext) -> Result<Self, FfiError> {
        // SAFETY: live context; SEAL keeps its own reference to the context data.
        create("CKKSEncoder_Create", |out| unsafe {
            CKKSEncoder_Create(context.ptr(), out)
        })
        .map(Self)
    }

    /// Number of slots (N/2).
    pub fn slot_count(&self) -> Result<usize, FfiError> {
        let mut slots: u64 = 0;
        // SAFETY: live object, valid out pointer.
        check("CKKSEncoder_SlotCount", unsafe {
            CKKSEncoder_SlotCount(self.ptr(), &mut slots)
        })?;
        Ok(usize::try_from(slots).unwrap_or(0))
    }

    /// Encodes `values` (at most `slot_count` of them) at the given level and scale.
    pub fn encode(
        &self,
        values: &[f64],
        parms_id: &ParmsId,
        scale: f64,
    ) -> Result<RawPlaintext, FfiError> {
        let pt = RawPlaintext::new()?;
        let mut id = *parms_id;
        // SAFETY: SEAL copies `values.len()` doubles out of the slice before returning.
        check("CKKSEncoder_Encode1", unsafe {
            CKKSEncoder_Encode1(
                self.ptr(),
                values.len() as u64,
                values.as_ptr().cast_mut(),
                id.as_mut_ptr(),
                scale,
                pt.ptr(),
                null_mut(),
            )
        })?;
        Ok(pt)
    }

    /// Encodes one real number into every slot.
    pub fn encode_scalar(
        &self,
        value: f64,
        parms_id: &ParmsId,
        scale: f64,
    ) -> Result<RawPlaintext, FfiError> {
        let pt = RawPlaintext::new()?;
        let mut id = *parms_id;
        // SAFETY: live objects; SEAL reads four words of `id`.
        check("CKKSEncoder_Encode3", unsafe {
            CKKSEncoder_Encode3(
                self.ptr(),
                value,
                id.as_mut_ptr(),
                scale,
                pt.ptr(),
                null_mut(),
            )
        })?;
        Ok(pt)
    }

    /// Decodes all slots of a plaintext.
    pub fn decode(&self, plain: &RawPlaintext) -> Result<Vec<f64>, FfiError> {
        let slots = self.slot_count()?;
        let mut values = vec![0.0f64; slots];
        let mut count = slots as u64;
        // SAFETY: SEAL writes `slot_count` doubles, the length of `values`.
        check("CKKSEncoder_Decode1", unsafe {
            CKKSEncoder_Decode1(
                self.ptr(),
                plain.ptr(),
                &mut count,
                values.as_mut_ptr(),
                null_mut(),
            )
        })?;
        values.truncate(usize::try_from(count).unwrap_or(0).min(slots));
        Ok(values)
    }
}

impl RawKeyGenerator {
    /// A key generator with a fresh secret key.
    pub fn new(context: &RawContext) -> Result<Self, FfiError> {
        // SAFETY: live context.
        create("KeyGenerator_Create1", |out| unsafe {
            KeyGenerator_Create1(context.ptr(), out)
        })
        .map(Self)
    }

    /// A key generator for an existing secret key.
    pub fn from_secret_key(context: &RawContext, secret: &RawSecretKey) -> Result<Self, FfiError> {
        // SAFETY: live context and key; SEAL copies the key.
        create("KeyGenerator_Create2", |out| unsafe {
            KeyGenerator_Create2(context.ptr(), secret.ptr(), out)
        })
        .map(Self)
    }

    /// A copy of the secret key.
    pub fn secret_key(&self) -> Result<RawSecretKey, FfiError> {
        // SAFETY: SEAL returns a new heap copy that we own.
        create("KeyGenerator_SecretKey", |out| unsafe {
            KeyGenerator_SecretKey(self.ptr(), out)
        })
        .map(RawSecretKey)
    }

    /// A public key. With `save_seed`, the object is only good for serialization.
    pub fn public_key(&self, save_seed: bool) -> Result<RawPublicKey, FfiError> {
        // SAFETY: SEAL returns a new heap object that we own.
        create("KeyGenerator_CreatePublicKey", |out| unsafe {
            KeyGenerator_CreatePublicKey(self.ptr(), save_seed, out)
        })
        .map(RawPublicKey)
    }

    /// Relinearization keys. With `save_seed`, only good for serialization.
    pub fn relin_keys(&self, save_seed: bool) -> Result<RawKSwitchKeys, FfiError> {
        // SAFETY: SEAL returns a new heap object that we own.
        create("KeyGenerator_CreateRelinKeys", |out| unsafe {
            KeyGenerator_CreateRelinKeys(self.ptr(), save_seed, out)
        })
        .map(RawKSwitchKeys)
    }

    /// Galois keys for the given rotation steps. With `save_seed`, only good for
    /// serialization.
    pub fn galois_keys(&self, steps: &[i32], save_seed: bool) -> Result<RawKSwitchKeys, FfiError> {
        let mut steps: Vec<c_int> = steps.to_vec();
        // SAFETY: SEAL copies `steps.len()` ints and returns a new object that we own.
        create("KeyGenerator_CreateGaloisKeysFromSteps", |out| unsafe {
            KeyGenerator_CreateGaloisKeysFromSteps(
                self.ptr(),
                steps.len() as u64,
                steps.as_mut_ptr(),
                save_seed,
                out,
            )
        })
        .map(RawKSwitchKeys)
    }
}

impl RawSecretKey {
    /// SEAL's serialization, uncompressed (the caller must treat the bytes as secret). The
    /// key is close to uniform modulo its primes, so zstd would gain little, and a key file
    /// written uncompressed is loaded without any decompressor running over secret bytes
    /// (older zstd key files still load).
    pub fn save(&self) -> Result<Vec<u8>, FfiError> {
        save_with(
            "SecretKey_SaveSize",
            "SecretKey_Save",
            COMPR_NONE,
            self.ptr(),
            SecretKey_SaveSize,
            SecretKey_Save,
        )
    }

    /// Loads and validates a secret key.
    pub fn load(context: &RawContext, bytes: &Checked<'_>) -> Result<Self, FfiError> {
        // SAFETY: creates an empty key that we own.
        let key = create("SecretKey_Create1", |out| unsafe { SecretKey_Create1(out) }).map(Self)?;
        load_with("SecretKey_Load", key.ptr(), context, bytes, SecretKey_Load)?;
        Ok(key)
    }
}

impl RawPublicKey {
    /// SEAL's serialization.
    pub fn save(&self) -> Result<Vec<u8>, FfiError> {
        save_with(
            "PublicKey_SaveSize",
            "PublicKey_Save",
            COMPR_ZSTD,
            self.ptr(),
            PublicKey_SaveSize,
            PublicKey_Save,
        )
    }

    /// Loads and validates a public key.
    pub fn load(context: &RawContext, bytes: &Checked<'_>) -> Result<Self, FfiError> {
        // SAFETY: creates an empty key that we own.
        let key = create("PublicKey_Create1", |out| unsafe { PublicKey_Create1(out) }).map(Self)?;
        load_with("PublicKey_Load", key.ptr(), context, bytes, PublicKey_Load)?;
        Ok(key)
    }
}

impl RawKSwitchKeys {
    /// SEAL's serialization.
    pub fn save(&self) -> Result<Vec<u8>, FfiError> {
        save_with(
            "KSwitchKeys_SaveSize",
            "KSwitchKeys_Save",
            COMPR_ZSTD,
            self.ptr(),
            KSwitchKeys_SaveSize,
            KSwitchKeys_Save,
        )
    }

    /// Loads and validates relinearization or Galois keys.
    pub fn load(context: &RawContext, bytes: &Checked<'_>) -> Result<Self, FfiError> {
        // SAFETY: creates an empty key set that we own.
        let keys = create("KSwitchKeys_Create1", |out| unsafe {
            KSwitchKeys_Create1(out)
        })
        .map(Self)?;
        load_with(
            "KSwitchKeys_Load",
            keys.ptr(),
            context,
            bytes,
            KSwitchKeys_Load,
        )?;
        Ok(keys)
    }
}

impl RawEncryptor {
    /// A public-key encryptor.
    pub fn new(context: &RawContext, public_key: &RawPublicKey) -> Result<Self, FfiError> {
        // SAFETY: live context and key; SEAL copies the key; no secret key is given.
        create("Encryptor_Create", |out| unsafe {
            Encryptor_Create(context.ptr(), public_key.ptr(), null_mut(), out)
        })
        .map(Self)
    }

    /// Encrypts a plaintext under the public key.
    pub fn encrypt(&self, plain: &RawPlaintext) -> Result<RawCiphertext, FfiError> {
        let ct = RawCiphertext::new()?;
        // SAFETY: live objects; `ct` is exclusively ours.
        check("Encryptor_Encrypt", unsafe {
            Encryptor_Encrypt(self.ptr(), plain.ptr(), ct.ptr(), null_mut())
        })?;
        Ok(ct)
    }
}

impl RawDecryptor {
    /// A decryptor holding a copy of the secret key.
    pub fn new(context: &RawContext, secret: &RawSecretKey) -> Result<Self, FfiError> {
        // SAFETY: live context and key; SEAL copies the key into cleared memory.
        create("Decryptor_Create", |out| unsafe {
            Decryptor_Create(context.ptr(), secret.ptr(), out)
        })
        .map(Self)
    }

    /// Decrypts a ciphertext.
    pub fn decrypt(&self, ct: &RawCiphertext) -> Result<RawPlaintext, FfiError> {
        let pt = RawPlaintext::new()?;
        // SAFETY: live objects; `pt` is exclusively ours.
        check("Decryptor_Decrypt", unsafe {
            Decryptor_Decrypt(self.ptr(), ct.ptr(), pt.ptr())
        })?;
        Ok(pt)
    }
}

/// Runs a binary SEAL evaluator call into a fresh destination ciphertext.
fn into_new(
    f: impl FnOnce(*mut c_void) -> Result<(), FfiError>,
) -> Result<RawCiphertext, FfiError> {
    let dest = RawCiphertext::new()?;
    f(dest.ptr())?;
    Ok(dest)
}

impl RawEvaluator {
    /// An evaluator for `context`.
    pub fn new(context: &RawContext) -> Result<Self, FfiError> {
        // SAFETY: live context.
        create("Evaluator_Create", |out| unsafe {
            Evaluator_Create(context.ptr(), out)
        })
        .map(Self)
    }

    /// `-a`.
    pub fn negate(&self, a: &RawCiphertext) -> Result<RawCiphertext, FfiError> {
        // SAFETY: live objects; the destination is fresh.
        into_new(|d| {
            check("Evaluator_Negate", unsafe {
                Evaluator_Negate(self.ptr(), a.ptr(), d)
            })
        })
    }

    /// `a + b` (same level and scale).
    pub fn add(&self, a: &RawCiphertext, b: &RawCiphertext) -> Result<RawCiphertext, FfiError> {
        // SAFETY: live objects; the destination is fresh.
        into_new(|d| {
            check("Evaluator_Add", unsafe {
                Evaluator_Add(self.ptr(), a.ptr(), b.ptr(), d)
            })
        })
    }

    /// `a += b` in place.
    pub fn add_inplace(&self, a: &mut RawCiphertext, b: &RawCiphertext) -> Result<(), FfiError> {
        // SAFETY: SEAL supports the destination aliasing the first operand.
        check("Evaluator_Add", unsafe {
            Evaluator_Add(self.ptr(), a.ptr(), b.ptr(), a.ptr())
        })
    }

    /// `a - b` (same level and scale).
    pub fn sub(&self, a: &RawCiphertext, b: &RawCiphertext) -> Result<RawCiphertext, FfiError> {
        // SAFETY: live objects; the destination is fresh.
        into_new(|d| {
            check("Evaluator_Sub", unsafe {
                Evaluator_Sub(self.ptr(), a.ptr(), b.ptr(), d)
            })
        })
    }

    /// `a + p` (same level and scale).
    pub fn add_plain(
        &self,
        a: &RawCiphertext,
        p: &RawPlaintext,
    ) -> Result<RawCiphertext, FfiError> {
        // SAFETY: live objects; the destination is fresh.
        into_new(|d| {
            check("Evaluator_AddPlain", unsafe {
                Evaluator_AddPlain(self.ptr(), a.ptr(), p.ptr(), d)
            })
        })
    }

    /// `a - p` (same level and scale).
    pub fn sub_plain(
        &self,
        a: &RawCiphertext,
        p: &RawPlaintext,
    ) -> Result<RawCiphertext, FfiError> {
        // SAFETY: live objects; the destination is fresh.
        into_new(|d| {
            check("Evaluator_SubPlain", unsafe {
                Evaluator_SubPlain(self.ptr(), a.ptr(), p.ptr(), d)
            })
        })
    }

    /// `a * b` without relinearization (result has three polynomials).
    pub fn multiply(
        &self,
        a: &RawCiphertext,
        b: &RawCiphertext,
    ) -> Result<RawCiphertext, FfiError> {
        // SAFETY: live objects; the destination is fresh.
        into_new(|d| {
            check("Evaluator_Multiply", unsafe {
                Evaluator_Multiply(self.ptr(), a.ptr(), b.ptr(), d, null_mut())
            })
        })
    }

    /// `a * a` without relinearization.
    pub fn square(&self, a: &RawCiphertext) -> Result<RawCiphertext, FfiError> {
        // SAFETY: live objects; the destination is fresh.
        into_new(|d| {
            check("Evaluator_Square", unsafe {
                Evaluator_Square(self.ptr(), a.ptr(), d, null_mut())
            })
        })
    }

    /// `a * p`.
    pub fn multiply_plain(
        &self,
        a: &RawCiphertext,
        p: &RawPlaintext,
    ) -> Result<RawCiphertext, FfiError> {
        // SAFETY: live objects; the destination is fresh.
        into_new(|d| {
            check("Evaluator_MultiplyPlain", unsafe {
                Evaluator_MultiplyPlain(self.ptr(), a.ptr(), p.ptr(), d, null_mut())
            })
        })
    }

    /// Relinearizes a three-polynomial ciphertext in place.
    pub fn relinearize_inplace(
        &self,
        a: &mut RawCiphertext,
        keys: &RawKSwitchKeys,
    ) -> Result<(), FfiError> {
        // SAFETY: SEAL supports in-place relinearization (destination aliases input).
        check("Evaluator_Relinearize", unsafe {
            Evaluator_Relinearize(self.ptr(), a.ptr(), keys.ptr(), a.ptr(), null_mut())
        })
    }

    /// Rescales to the next level (divides by the last prime).
    pub fn rescale_to_next(&self, a: &RawCiphertext) -> Result<RawCiphertext, FfiError> {
        // SAFETY: live objects; the destination is fresh.
        into_new(|d| {
            check("Evaluator_RescaleToNext", unsafe {
                Evaluator_RescaleToNext(self.ptr(), a.ptr(), d, null_mut())
            })
        })
    }

    /// Switches to a lower level without changing the scale.
    pub fn mod_switch_to(
        &self,
        a: &RawCiphertext,
        parms_id: &ParmsId,
    ) -> Result<RawCiphertext, FfiError> {
        let mut id = *parms_id;
        // SAFETY: live objects; SEAL reads four words of `id`; the destination is fresh.
        into_new(|d| {
            check("Evaluator_ModSwitchTo1", unsafe {
                Evaluator_ModSwitchTo1(self.ptr(), a.ptr(), id.as_mut_ptr(), d, null_mut())
            })
        })
    }

    /// Rotates the slot vector left by `steps` (negative: right).
    pub fn rotate(
        &self,
        a: &RawCiphertext,
        steps: i32,
        keys: &RawKSwitchKeys,
    ) -> Result<RawCiphertext, FfiError> {
        // SAFETY: live objects; the destination is fresh.
        into_new(|d| {
            check("Evaluator_RotateVector", unsafe {
                Evaluator_RotateVector(self.ptr(), a.ptr(), steps, keys.ptr(), d, null_mut())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_have_meanings() {
        let e = FfiError {
            function: "Ciphertext_Load",
            code: COR_E_IO as i64,
        };
        assert!(e.to_string().contains("Ciphertext_Load"));
        assert!(e.meaning().contains("malformed"));
        assert_eq!(check("x", S_OK), Ok(()));
        assert!(check("x", E_INVALIDARG).is_err());
    }
}
