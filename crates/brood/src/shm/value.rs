//! `Value`, `Array`, `RawValue`, `RawArray`: plain-old-data in shared
//! memory, with or without a lock (Python's `multiprocessing.Value`,
//! `Array`, `RawValue`, `RawArray`).

use std::any::TypeId;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::memory::{Block, SharedState};
use crate::error::{Error, Result};
use crate::sync::{Lock, LockGuard, LockResult, OwnerDied, TryLockError};

/// A Python `array`/`ctypes` typecode, for code ported from Python's
/// `Value('i', 0)` and `Array('d', 10)`.
///
/// | code | Rust type | | code | Rust type |
/// |---|---|---|---|---|
/// | `'b'` | `i8` | | `'B'` | `u8` |
/// | `'h'` | `i16` | | `'H'` | `u16` |
/// | `'i'` | `i32` | | `'I'` | `u32` |
/// | `'l'` | `i64` (`c_long`) | | `'L'` | `u64` (`c_ulong`) |
/// | `'q'` | `i64` | | `'Q'` | `u64` |
/// | `'f'` | `f32` | | `'d'` | `f64` |
/// | `'c'` | `u8` (one byte) | | | |
///
/// ```
/// use brood::shm::Typecode;
/// let code = Typecode::try_from('d').unwrap();
/// assert_eq!(code, Typecode::Double);
/// assert_eq!(code.size(), 8);
/// assert!(code.is::<f64>());
/// assert!(Typecode::try_from('x').is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Typecode {
    /// `'b'`: signed char, `i8`.
    Byte,
    /// `'B'`: unsigned char, `u8`.
    UByte,
    /// `'h'`: short, `i16`.
    Short,
    /// `'H'`: unsigned short, `u16`.
    UShort,
    /// `'i'`: int, `i32`.
    Int,
    /// `'I'`: unsigned int, `u32`.
    UInt,
    /// `'l'`: long, `libc::c_long`.
    Long,
    /// `'L'`: unsigned long, `libc::c_ulong`.
    ULong,
    /// `'q'`: long long, `i64`.
    LongLong,
    /// `'Q'`: unsigned long long, `u64`.
    ULongLong,
    /// `'f'`: float, `f32`.
    Float,
    /// `'d'`: double, `f64`.
    Double,
    /// `'c'`: a one-byte char, `u8`.
    Char,
}

impl Typecode {
    const ALL: [Typecode; 13] = [
        Typecode::Byte,
        Typecode::UByte,
        Typecode::Short,
        Typecode::UShort,
        Typecode::Int,
        Typecode::UInt,
        Typecode::Long,
        Typecode::ULong,
        Typecode::LongLong,
        Typecode::ULongLong,
        Typecode::Float,
        Typecode::Double,
        Typecode::Char,
    ];

    /// The typecode's letter.
    ///
    /// ```
    /// assert_eq!(brood::shm::Typecode::Int.as_char(), 'i');
    /// ```
    pub fn as_char(self) -> char {
        match self {
            Typecode::Byte => 'b',
            Typecode::UByte => 'B',
            Typecode::Short => 'h',
            Typecode::UShort => 'H',
            Typecode::Int => 'i',
            Typecode::UInt => 'I',
            Typecode::Long => 'l',
            Typecode::ULong => 'L',
            Typecode::LongLong => 'q',
            Typecode::ULongLong => 'Q',
            Typecode::Float => 'f',
            Typecode::Double => 'd',
            Typecode::Char => 'c',
        }
    }

    fn type_id(self) -> TypeId {
        match self {
            Typecode::Byte => TypeId::of::<i8>(),
            Typecode::UByte | Typecode::Char => TypeId::of::<u8>(),
            Typecode::Short => TypeId::of::<i16>(),
            Typecode::UShort => TypeId::of::<u16>(),
            Typecode::Int => TypeId::of::<i32>(),
            Typecode::UInt => TypeId::of::<u32>(),
            Typecode::Long => TypeId::of::<libc::c_long>(),
            Typecode::ULong => TypeId::of::<libc::c_ulong>(),
            Typecode::LongLong => TypeId::of::<i64>(),
            Typecode::ULongLong => TypeId::of::<u64>(),
            Typecode::Float => TypeId::of::<f32>(),
            Typecode::Double => TypeId::of::<f64>(),
        }
    }

    /// The size of one element in bytes.
    ///
    /// ```
    /// assert_eq!(brood::shm::Typecode::Short.size(), 2);
    /// ```
    pub fn size(self) -> usize {
        match self {
            Typecode::Byte | Typecode::UByte | Typecode::Char => 1,
            Typecode::Short | Typecode::UShort => 2,
            Typecode::Int | Typecode::UInt | Typecode::Float => 4,
            Typecode::Long | Typecode::ULong => std::mem::size_of::<libc::c_long>(),
            Typecode::LongLong | Typecode::ULongLong | Typecode::Double => 8,
        }
    }

    /// Whether `T` is this typecode's Rust type.
    ///
    /// ```
    /// assert!(brood::shm::Typecode::Int.is::<i32>());
    /// assert!(!brood::shm::Typecode::Int.is::<u32>());
    /// ```
    pub fn is<T: 'static>(self) -> bool {
        self.type_id() == TypeId::of::<T>()
    }

    /// The typecode of `T`, if it has one (`u8` gives `'B'`).
    ///
    /// ```
    /// use brood::shm::Typecode;
    /// assert_eq!(Typecode::of::<f32>(), Some(Typecode::Float));
    /// assert_eq!(Typecode::of::<(u8, u8)>(), None);
    /// ```
    pub fn of<T: 'static>() -> Option<Typecode> {
        Typecode::ALL.into_iter().find(|code| code.is::<T>())
    }

    fn check<T: 'static>(code: char) -> Result<Typecode> {
        let code = Typecode::try_from(code)?;
        if !code.is::<T>() {
            return Err(Error::invalid(format!(
                "typecode {:?} is not the type {}",
                code.as_char(),
                std::any::type_name::<T>()
            )));
        }
        Ok(code)
    }
}

impl TryFrom<char> for Typecode {
    type Error = Error;

    fn try_from(c: char) -> Result<Typecode> {
        Typecode::ALL
            .into_iter()
            .find(|code| code.as_char() == c)
            .ok_or_else(|| Error::invalid(format!("unknown typecode {c:?}")))
    }
}

impl fmt::Display for Typecode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// Loads one element without forming a reference: one atomic load when the
/// element is a naturally aligned 1, 2, 4 or 8 bytes (so never torn), else
/// byte by byte.
///
/// # Safety
///
/// `p` is valid for reads of a `T` and aligned for `T`.
unsafe fn load<T: Pod>(p: *const T) -> T {
    let size = std::mem::size_of::<T>();
    let natural = std::mem::align_of::<T>() >= size;
    // SAFETY: `p` is valid and aligned for T (caller); when `natural`, it is
    // aligned for the atomic of T's size, and atomics may alias memory other
    // processes write.
    unsafe {
        match (size, natural) {
            (1, _) => bytemuck::cast(AtomicU8::from_ptr(p as *mut u8).load(Ordering::Relaxed)),
            (2, true) => bytemuck::cast(AtomicU16::from_ptr(p as *mut u16).load(Ordering::Relaxed)),
            (4, true) => bytemuck::cast(AtomicU32::from_ptr(p as *mut u32).load(Ordering::Relaxed)),
            (8, true) => bytemuck::cast(AtomicU64::from_ptr(p as *mut u64).load(Ordering::Relaxed)),
            _ => {
                let mut out = T::zeroed();
                let bytes = bytemuck::bytes_of_mut(&mut out);
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = AtomicU8::from_ptr((p as *mut u8).add(i)).load(Ordering::Relaxed);
                }
                out
            }
        }
    }
}

/// Stores one element without forming a reference (see [`load`]).
///
/// # Safety
///
/// `p` is valid for writes of a `T` and aligned for `T`.
unsafe fn store<T: Pod>(p: *mut T, value: T) {
    let size = std::mem::size_of::<T>();
    let natural = std::mem::align_of::<T>() >= size;
    // SAFETY: as in `load`.
    unsafe {
        match (size, natural) {
            (1, _) => {
                AtomicU8::from_ptr(p as *mut u8).store(bytemuck::cast(value), Ordering::Relaxed)
            }
            (2, true) => {
                AtomicU16::from_ptr(p as *mut u16).store(bytemuck::cast(value), Ordering::Relaxed)
            }
            (4, true) => {
                AtomicU32::from_ptr(p as *mut u32).store(bytemuck::cast(value), Ordering::Relaxed)
            }
            (8, true) => {
                AtomicU64::from_ptr(p as *mut u64).store(bytemuck::cast(value), Ordering::Relaxed)
            }
            _ => {
                for (i, b) in bytemuck::bytes_of(&value).iter().enumerate() {
                    AtomicU8::from_ptr((p as *mut u8).add(i)).store(*b, Ordering::Relaxed);
                }
            }
        }
    }
}

/// What a raw block records about its elements (written before it is
/// shared, read-only after).
#[repr(C)]
pub(crate) struct RawHeader {
    elem_size: u64,
    elem_align: u64,
    len: u64,
    /// The typecode's letter, or 0.
    typecode: u32,
}

// SAFETY: repr(C), plain integers never written after sharing.
unsafe impl SharedState for RawHeader {
    const MAGIC: u32 = u32::from_be_bytes(*b"RAWA");
}

/// A fixed-length array of `T` in shared memory, without a lock (Python's
/// `multiprocessing.RawArray`). Each element is read and written whole
/// (atomically for 1, 2, 4 and 8-byte numbers), but nothing orders
/// accesses of different processes: guard multi-element updates with a
/// lock, or use [`Array`].
///
/// ```
/// use brood::shm::RawArray;
/// let a = RawArray::new(&[1.5f64, 2.5])?;
/// a.set(1, 3.5)?;
/// assert_eq!(a.to_vec(), [1.5, 3.5]);
/// assert_eq!(a.len(), 2);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct RawArray<T: Pod> {
    block: Block<RawHeader>,
    len: usize,
    _elem: PhantomData<T>,
}

impl<T: Pod> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            block: self.block.clone(),
            len: self.len,
            _elem: PhantomData,
        }
    }
}

impl<T: Pod> RawArray<T> {
    fn align() -> usize {
        std::mem::align_of::<T>()
    }

    fn build(
        len: usize,
        typecode: Option<Typecode>,
        init: impl FnOnce(*mut T),
    ) -> Result<RawArray<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::invalid("array too large"))?;
        let block = Block::<RawHeader>::new(bytes, Self::align(), |h| {
            // SAFETY: fresh, unshared memory.
            unsafe {
                (*h).elem_size = std::mem::size_of::<T>() as u64;
                (*h).elem_align = Self::align() as u64;
                (*h).len = len as u64;
                (*h).typecode = typecode.map_or(0, |c| c.as_char() as u32);
            }
            Ok(())
        })?;
        init(block.tail(Self::align()).cast::<T>());
        Ok(RawArray {
            block,
            len,
            _elem: PhantomData,
        })
    }

    /// A shared array holding a copy of `values`.
    ///
    /// ```
    /// let a = brood::shm::RawArray::new(&[1u8, 2, 3])?;
    /// assert_eq!(a.get(2)?, 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new(values: &[T]) -> Result<RawArray<T>> {
        RawArray::build(values.len(), Typecode::of::<T>(), |p| {
            // SAFETY: the block has room for `values.len()` aligned Ts and
            // no one else sees it yet.
            unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), p, values.len()) }
        })
    }

    /// A shared array of `len` zeroes (Python's `RawArray('i', 10)`).
    ///
    /// ```
    /// let a = brood::shm::RawArray::<i32>::zeroed(3)?;
    /// assert_eq!(a.to_vec(), [0, 0, 0]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn zeroed(len: usize) -> Result<RawArray<T>> {
        // A fresh segment is zero-filled.
        RawArray::build(len, Typecode::of::<T>(), |_| {})
    }

    /// A shared array of `len` zeroes of a Python typecode, checked
    /// against `T` (Python's `RawArray('c', 5)`); [`typecode`] then gives
    /// this code back, not an alias of the same Rust type.
    ///
    /// [`typecode`]: RawArray::typecode
    ///
    /// ```
    /// let a = brood::shm::RawArray::<u8>::from_typecode('c', 4)?;
    /// assert_eq!(a.typecode().unwrap().as_char(), 'c');
    /// assert_eq!(a.to_vec(), [0; 4]);
    /// assert!(brood::shm::RawArray::<u8>::from_typecode('i', 4).is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn from_typecode(code: char, len: usize) -> Result<RawArray<T>> {
        let code = Typecode::check::<T>(code)?;
        RawArray::build(len, Some(code), |_| {})
    }

    /// Like [`new`](RawArray::new), checking a Python typecode against `T`.
    ///
    /// ```
    /// use brood::shm::RawArray;
    /// assert!(RawArray::with_typecode('i', &[1i32, 2]).is_ok());
    /// assert!(RawArray::with_typecode('d', &[1i32, 2]).is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn with_typecode(code: char, values: &[T]) -> Result<RawArray<T>> {
        let code = Typecode::check::<T>(code)?;
        RawArray::build(values.len(), Some(code), |p| {
            // SAFETY: as in `new`.
            unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), p, values.len()) }
        })
    }

    /// The number of elements.
    ///
    /// ```
    /// assert_eq!(brood::shm::RawArray::<u16>::zeroed(5)?.len(), 5);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    ///
    /// ```
    /// assert!(brood::shm::RawArray::<u16>::zeroed(0)?.is_empty());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The Python typecode: the one it was made with (`'c'`, `'q'`), else
    /// `T`'s own (`u8` gives `'B'`, `i64` gives `'l'`); `None` for types
    /// without one.
    ///
    /// ```
    /// use brood::shm::{RawArray, Typecode};
    /// let a = RawArray::<f32>::zeroed(1)?;
    /// assert_eq!(a.typecode(), Some(Typecode::Float));
    /// let q = RawArray::with_typecode('q', &[1i64])?;
    /// assert_eq!(q.typecode(), Some(Typecode::LongLong));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn typecode(&self) -> Option<Typecode> {
        char::from_u32(self.block.get().typecode)
            .and_then(|c| Typecode::try_from(c).ok())
            .filter(|code| code.is::<T>())
            .or_else(Typecode::of::<T>)
    }

    fn ptr(&self) -> *mut T {
        self.block.tail(Self::align()).cast::<T>()
    }

    fn check_index(&self, index: usize) -> Result<()> {
        if index < self.len {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "index {index} out of range for an array of {}",
                self.len
            )))
        }
    }

    /// The element at `index`; out of range is an error.
    ///
    /// ```
    /// let a = brood::shm::RawArray::new(&[4u32])?;
    /// assert_eq!(a.get(0)?, 4);
    /// assert!(a.get(1).is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<T> {
        self.check_index(index)?;
        // SAFETY: in bounds; the block is mapped while `self` lives and the
        // elements are aligned for T.
        Ok(unsafe { load(self.ptr().add(index)) })
    }

    /// Sets the element at `index`; out of range is an error.
    ///
    /// ```
    /// let a = brood::shm::RawArray::new(&[4u32])?;
    /// a.set(0, 9)?;
    /// assert_eq!(a.get(0)?, 9);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.check_index(index)?;
        // SAFETY: in bounds, mapped, aligned (see `get`).
        unsafe { store(self.ptr().add(index), value) };
        Ok(())
    }

    /// A copy of every element.
    ///
    /// ```
    /// assert_eq!(brood::shm::RawArray::new(&[1i8, -1])?.to_vec(), [1, -1]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        // SAFETY: every index below `len` is in bounds, mapped and aligned.
        (0..self.len)
            .map(|i| unsafe { load(self.ptr().add(i)) })
            .collect()
    }

    /// Copies `values` into the array (lengths must match).
    ///
    /// ```
    /// let a = brood::shm::RawArray::<u8>::zeroed(2)?;
    /// a.copy_from_slice(&[7, 8])?;
    /// assert_eq!(a.to_vec(), [7, 8]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn copy_from_slice(&self, values: &[T]) -> Result<()> {
        if values.len() != self.len {
            return Err(Error::invalid(format!(
                "cannot copy {} elements into an array of {}",
                values.len(),
                self.len
            )));
        }
        for (i, v) in values.iter().enumerate() {
            // SAFETY: in bounds, mapped, aligned.
            unsafe { store(self.ptr().add(i), *v) };
        }
        Ok(())
    }

    /// The elements as a slice.
    ///
    /// # Safety
    ///
    /// No one (no process, no thread) may write the array while the slice
    /// lives.
    ///
    /// ```
    /// let a = brood::shm::RawArray::new(&[1u8, 2])?;
    /// // SAFETY: no one else knows this array.
    /// assert_eq!(unsafe { a.as_slice() }, &[1, 2]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: `len` aligned, initialised (Pod) elements, mapped while
        // `self` lives; the caller rules out writers.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }

    fn from_block(block: Block<RawHeader>) -> Result<RawArray<T>> {
        let h = block.get();
        let size = std::mem::size_of::<T>();
        if h.elem_size != size as u64 || h.elem_align != Self::align() as u64 {
            return Err(Error::invalid(format!(
                "the shared array's elements are not {}",
                std::any::type_name::<T>()
            )));
        }
        let len = h.len as usize;
        let need =
            Block::<RawHeader>::tail_offset(Self::align()).saturating_add(len.saturating_mul(size));
        if block.len() < need {
            return Err(Error::invalid(
                "the shared array is smaller than its length",
            ));
        }
        Ok(RawArray {
            block,
            len,
            _elem: PhantomData,
        })
    }
}

/// Python's char arrays (`RawArray('c', n)`): the bytes as a string.
impl RawArray<u8> {
    /// The bytes up to the first NUL, or all of them (Python's `.value`
    /// of a char array).
    ///
    /// ```
    /// let a = brood::shm::RawArray::<u8>::from_typecode('c', 5)?;
    /// a.set_value(b"hi")?;
    /// assert_eq!(a.value(), b"hi");
    /// assert_eq!(a.raw(), b"hi\0\0\0");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn value(&self) -> Vec<u8> {
        until_nul(self.to_vec())
    }

    /// Every byte, NULs included (Python's `.raw`).
    ///
    /// ```
    /// let a = brood::shm::RawArray::new(b"a\0b")?;
    /// assert_eq!(a.raw(), b"a\0b");
    /// assert_eq!(a.value(), b"a");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn raw(&self) -> Vec<u8> {
        self.to_vec()
    }

    /// Writes `bytes` from the start, then a NUL if there is room (Python's
    /// `.value = ...`); the bytes after that NUL stay. Longer than the array
    /// is an error ("byte string too long") and changes nothing.
    ///
    /// ```
    /// let a = brood::shm::RawArray::new(b"abcde")?;
    /// a.set_value(b"x")?;
    /// assert_eq!(a.raw(), b"x\0cde");
    /// assert!(a.set_value(b"too long").is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set_value(&self, bytes: &[u8]) -> Result<()> {
        check_fits(bytes, self.len)?;
        for (i, b) in bytes.iter().enumerate() {
            self.set(i, *b)?;
        }
        if bytes.len() < self.len {
            self.set(bytes.len(), 0)?;
        }
        Ok(())
    }

    /// Writes `bytes` from the start, adding no NUL (Python's `.raw =
    /// ...`); longer than the array is an error and changes nothing.
    ///
    /// ```
    /// let a = brood::shm::RawArray::new(b"abcde")?;
    /// a.set_raw(b"xy")?;
    /// assert_eq!(a.raw(), b"xycde");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set_raw(&self, bytes: &[u8]) -> Result<()> {
        check_fits(bytes, self.len)?;
        for (i, b) in bytes.iter().enumerate() {
            self.set(i, *b)?;
        }
        Ok(())
    }
}

fn until_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(end) = bytes.iter().position(|b| *b == 0) {
        bytes.truncate(end);
    }
    bytes
}

fn check_fits(bytes: &[u8], len: usize) -> Result<()> {
    if bytes.len() > len {
        return Err(Error::invalid(format!(
            "byte string too long: {} bytes for a char array of {len}",
            bytes.len()
        )));
    }
    Ok(())
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawArray").field(&self.to_vec()).finish()
    }
}

impl<T: Pod> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.block.serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Block::deserialize_checked(deserializer, 0, RawArray::<T>::align())
            .and_then(|block| RawArray::from_block(block).map_err(serde::de::Error::custom))
    }
}

/// One `T` in shared memory, without a lock (Python's
/// `multiprocessing.RawValue`). Reads and writes are whole (atomic for 1,
/// 2, 4 and 8-byte numbers) but a read-modify-write is not: use [`Value`]
/// for that.
///
/// ```
/// let v = brood::shm::RawValue::new(1.5f32)?;
/// v.set(2.5);
/// assert_eq!(v.get(), 2.5);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct RawValue<T: Pod> {
    array: RawArray<T>,
}

impl<T: Pod> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            array: self.array.clone(),
        }
    }
}

impl<T: Pod> RawValue<T> {
    /// A shared value starting at `value`.
    ///
    /// ```
    /// assert_eq!(brood::shm::RawValue::new(7u64)?.get(), 7);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new(value: T) -> Result<RawValue<T>> {
        Ok(RawValue {
            array: RawArray::new(&[value])?,
        })
    }

    /// Like [`new`](RawValue::new), checking a Python typecode against `T`
    /// (Python's `RawValue('i', 7)`).
    ///
    /// ```
    /// let v = brood::shm::RawValue::with_typecode('i', 7i32)?;
    /// assert_eq!(v.get(), 7);
    /// assert!(brood::shm::RawValue::with_typecode('q', 7i32).is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn with_typecode(code: char, value: T) -> Result<RawValue<T>> {
        Ok(RawValue {
            array: RawArray::with_typecode(code, &[value])?,
        })
    }

    /// A shared value starting at `T`'s zero (Python's `RawValue('i')`,
    /// without an initial value).
    ///
    /// ```
    /// assert_eq!(brood::shm::RawValue::<f64>::zeroed()?.get(), 0.0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn zeroed() -> Result<RawValue<T>> {
        Ok(RawValue {
            array: RawArray::zeroed(1)?,
        })
    }

    /// A zero of a Python typecode, checked against `T` (Python's
    /// `RawValue('q')`).
    ///
    /// ```
    /// let v = brood::shm::RawValue::<i64>::from_typecode('q')?;
    /// assert_eq!((v.get(), v.typecode().unwrap().as_char()), (0, 'q'));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn from_typecode(code: char) -> Result<RawValue<T>> {
        Ok(RawValue {
            array: RawArray::from_typecode(code, 1)?,
        })
    }

    /// The value (Python's `.value`).
    ///
    /// ```
    /// assert_eq!(brood::shm::RawValue::new(-3i16)?.get(), -3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get(&self) -> T {
        // SAFETY: the block holds one mapped, aligned T.
        unsafe { load(self.array.ptr()) }
    }

    /// Sets the value (Python's `.value = ...`).
    ///
    /// ```
    /// let v = brood::shm::RawValue::new(0u8)?;
    /// v.set(255);
    /// assert_eq!(v.get(), 255);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set(&self, value: T) {
        // SAFETY: the block holds one mapped, aligned T.
        unsafe { store(self.array.ptr(), value) }
    }

    /// The Python typecode it was made with, else `T`'s own (see
    /// [`RawArray::typecode`]).
    ///
    /// ```
    /// assert_eq!(brood::shm::RawValue::new(0i32)?.typecode().unwrap().as_char(), 'i');
    /// assert_eq!(brood::shm::RawValue::with_typecode('c', b'x')?.typecode().unwrap().as_char(), 'c');
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn typecode(&self) -> Option<Typecode> {
        self.array.typecode()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawValue").field(&self.get()).finish()
    }
}

impl<T: Pod> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.array.serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let array = RawArray::<T>::deserialize(deserializer)?;
        if array.len() != 1 {
            return Err(serde::de::Error::custom(
                "a shared value holds exactly one element",
            ));
        }
        Ok(RawValue { array })
    }
}

/// The error `Value::get`/`set` and `Array::get`/`set`/`to_vec` return when
/// a holder of the lock died; the lock is released again by then.
fn died<G>(_: OwnerDied<G>) -> Error {
    crate::sync::owner_died_error_released()
}

/// Which values and arrays the calling thread has lent to a live
/// [`ValueGuard`] or [`ArrayGuard`]: while one is, `get`/`set` by the
/// thread that holds the lock (which otherwise go straight to the memory,
/// Python's re-entrant `with v.get_lock(): v.value += 1`) would alias the
/// guard's `&mut`, so they fail instead.
///
/// Per thread, by the address of the elements in this process's mapping;
/// eight slots, then a count of the rest (any overflow makes every such
/// access fail: conservative, never unsound). A forked child starts with
/// none (a `pthread_atfork` handler clears the forking thread's copy: its
/// guards are the parent's).
mod lent {
    use super::Cell;

    const SLOTS: usize = 8;

    thread_local! {
        // Const-initialised cells without destructors: no lazy set-up, so
        // the fork handler below only touches this thread's static memory,
        // and a guard costs a load and a store in the first free slot.
        static ADDRS: [Cell<usize>; SLOTS] = const { [const { Cell::new(0) }; SLOTS] };
        static OVERFLOW: Cell<u32> = const { Cell::new(0) };
    }

    static ATFORK: std::sync::Once = std::sync::Once::new();

    extern "C" fn forked_child() {
        ADDRS.with(|addrs| addrs.iter().for_each(|a| a.set(0)));
        OVERFLOW.with(|o| o.set(0));
    }

    /// One element block lent to a guard, until dropped.
    pub(super) struct Lent {
        addr: usize,
        slotted: bool,
    }

    impl Lent {
        #[inline]
        pub(super) fn new(addr: usize) -> Lent {
            ATFORK.call_once(|| {
                // SAFETY: registers a handler with no arguments that only
                // stores to const thread-locals (async-signal-safe).
                unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
            });
            let slotted = ADDRS.with(|addrs| match addrs.iter().find(|a| a.get() == 0) {
                Some(free) => {
                    free.set(addr);
                    true
                }
                None => false,
            });
            if !slotted {
                OVERFLOW.with(|o| o.set(o.get() + 1));
            }
            Lent { addr, slotted }
        }
    }

    impl Drop for Lent {
        #[inline]
        fn drop(&mut self) {
            if self.slotted {
                let _ = ADDRS.try_with(|addrs| {
                    if let Some(slot) = addrs.iter().find(|a| a.get() == self.addr) {
                        slot.set(0);
                    }
                });
            } else {
                let _ = OVERFLOW.try_with(|o| o.set(o.get().saturating_sub(1)));
            }
        }
    }

    /// Whether `addr` may be lent to a live guard of this thread.
    pub(super) fn is_lent(addr: usize) -> bool {
        OVERFLOW.with(Cell::get) > 0 || ADDRS.with(|addrs| addrs.iter().any(|a| a.get() == addr))
    }
}

/// Makes sure the calling thread holds `lock` for one access to the
/// elements at `addr`: takes it (`Some` guard), or finds it held by this
/// thread already (`None`: Python's RLock re-entry) — an error then if a
/// guard of this thread has those elements.
fn held(lock: &Lock, addr: usize) -> Result<Option<LockGuard<'_>>> {
    match lock.try_lock() {
        Ok(guard) => Ok(Some(guard)),
        Err(TryLockError::OwnerDied(d)) => Err(died(d)),
        Err(TryLockError::WouldBlock) if lock.is_owned() => {
            if lent::is_lent(addr) {
                Err(lent_error())
            } else {
                Ok(None)
            }
        }
        Err(TryLockError::WouldBlock) => lock.lock().map(Some).map_err(died),
    }
}

fn lent_error() -> Error {
    Error::invalid(
        "this thread holds a guard of the value (from lock()): read and write it through the \
         guard while the guard lives",
    )
}

/// Holds a [`Value`]'s lock and gives access to the value.
///
/// ```
/// let v = brood::shm::Value::new(1u32)?;
/// let mut guard = v.lock().unwrap();
/// *guard += 1;
/// assert_eq!(*guard, 2);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct ValueGuard<'a, T: Pod> {
    _lent: lent::Lent,
    _lock: LockGuard<'a>,
    ptr: *mut T,
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held, so no process that goes through it
        // touches the value; the pointer is mapped and aligned while the
        // guard (which borrows the Value) lives.
        unsafe { &*self.ptr }
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for deref; `&mut self` makes this the only reference.
        unsafe { &mut *self.ptr }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Holds an [`Array`]'s lock and gives access to its elements as a slice.
///
/// ```
/// let a = brood::shm::Array::new(&[3, 1, 2])?;
/// let mut guard = a.lock().unwrap();
/// guard.sort();
/// assert_eq!(&*guard, &[1, 2, 3]);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct ArrayGuard<'a, T: Pod> {
    _lent: lent::Lent,
    _lock: LockGuard<'a>,
    ptr: *mut T,
    len: usize,
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: as for ValueGuard: held lock, mapped aligned elements.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for deref; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

fn map_guard<G, H>(result: LockResult<G>, f: impl FnOnce(G) -> H) -> LockResult<H> {
    match result {
        Ok(g) => Ok(f(g)),
        Err(died) => Err(OwnerDied::new(f(died.into_inner()))),
    }
}

/// One `T` in shared memory with its own [`Lock`] (Python's
/// `multiprocessing.Value`): [`lock`](Value::lock) for read-modify-write,
/// [`get`](Value::get)/[`set`](Value::set) for one access under the lock.
///
/// Python's default lock here is an `RLock`; brood's is a [`Lock`], since
/// its guard hands out `&mut T` (two guards of one thread would alias).
/// What Python's re-entrancy is used for still works: the thread that holds
/// the lock (taken with [`get_lock`](Value::get_lock)) reads and writes
/// through [`get`](Value::get)/[`set`](Value::set) without taking it again,
/// so the literal port of `with v.get_lock(): v.value += 1` is
/// `let _g = v.get_lock().lock(); v.set(v.get()? + 1)?;`. Only `lock()`
/// itself is not re-entrant (it panics, like [`Lock::lock`], rather than
/// deadlock), and while a [`ValueGuard`] lives `get`/`set` from its thread
/// fail: use the guard. If a holder dies, the next `lock` says so
/// ([`OwnerDied`]) and the value is still there to inspect.
///
/// ```
/// use brood::shm::Value;
///
/// let counter = Value::new(0i64)?;
/// let mut kids: Vec<_> = (0..3)
///     .map(|_| {
///         brood::Process::with_args(
///             |c: Value<i64>| {
///                 for _ in 0..100 {
///                     *c.lock().unwrap() += 1;
///                 }
///             },
///             counter.clone(),
///         )
///     })
///     .collect();
/// for k in &mut kids {
///     k.start()?;
/// }
/// for k in &mut kids {
///     k.join()?;
/// }
/// assert_eq!(counter.get()?, 300);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct Value<T: Pod> {
    raw: RawValue<T>,
    lock: Lock,
}

impl<T: Pod> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            raw: self.raw.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: Pod> Value<T> {
    /// A shared value starting at `value`, with a new lock.
    ///
    /// ```
    /// assert_eq!(brood::shm::Value::new(3u8)?.get()?, 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new(value: T) -> Result<Value<T>> {
        Value::with_lock(value, Lock::new()?)
    }

    /// A shared value guarded by an existing lock (Python's
    /// `Value('i', 0, lock=lock)`), e.g. one lock for several values.
    ///
    /// ```
    /// let lock = brood::sync::Lock::new()?;
    /// let a = brood::shm::Value::with_lock(1u32, lock.clone())?;
    /// let b = brood::shm::Value::with_lock(2u32, lock)?;
    /// assert_eq!(a.get()? + b.get()?, 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn with_lock(value: T, lock: Lock) -> Result<Value<T>> {
        Ok(Value {
            raw: RawValue::new(value)?,
            lock,
        })
    }

    /// Like [`new`](Value::new), checking a Python typecode against `T`
    /// (Python's `Value('d', 0.0)`).
    ///
    /// ```
    /// let v = brood::shm::Value::with_typecode('d', 0.5f64)?;
    /// assert_eq!(v.get()?, 0.5);
    /// assert!(brood::shm::Value::with_typecode('i', 0.5f64).is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn with_typecode(code: char, value: T) -> Result<Value<T>> {
        Ok(Value {
            raw: RawValue::with_typecode(code, value)?,
            lock: Lock::new()?,
        })
    }

    /// A shared value starting at `T`'s zero, with a new lock (Python's
    /// `Value('i')` without an initial value).
    ///
    /// ```
    /// let v = brood::shm::Value::<i64>::zeroed()?;
    /// assert_eq!(v.get()?, 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn zeroed() -> Result<Value<T>> {
        Ok(Value {
            raw: RawValue::zeroed()?,
            lock: Lock::new()?,
        })
    }

    /// A zero of a Python typecode, checked against `T`, with a new lock
    /// (Python's `Value('q')`); [`typecode`](Value::typecode) gives the
    /// code back.
    ///
    /// ```
    /// let v = brood::shm::Value::<u8>::from_typecode('c')?;
    /// assert_eq!(v.get()?, 0);
    /// assert_eq!(v.typecode().unwrap().as_char(), 'c');
    /// assert!(brood::shm::Value::<u8>::from_typecode('d').is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn from_typecode(code: char) -> Result<Value<T>> {
        Ok(Value {
            raw: RawValue::from_typecode(code)?,
            lock: Lock::new()?,
        })
    }

    /// Runs `f` on the value under the lock: taking it, or — when the
    /// calling thread holds it already — directly.
    fn access<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let ptr = self.raw.array.ptr();
        let _held = held(&self.lock, ptr as usize)?;
        // SAFETY: this thread holds the lock (taken just now, or before and
        // then no guard of this thread has the value: `held` checks), so no
        // process that goes through it touches the value; the reference
        // lives only for `f`, which cannot reach another one to it. Mapped
        // and aligned while `self` lives.
        Ok(f(unsafe { &mut *ptr }))
    }

    /// Takes the lock; the guard reads and writes the value. `Err` when a
    /// holder died: the guard is inside (see
    /// [`OwnerDied`](crate::sync::OwnerDied)).
    ///
    /// ```
    /// let v = brood::shm::Value::new(10u32)?;
    /// *v.lock().unwrap() *= 2;
    /// assert_eq!(v.get()?, 20);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        let ptr = self.raw.array.ptr();
        map_guard(self.lock.lock(), |g| ValueGuard {
            _lent: lent::Lent::new(ptr as usize),
            _lock: g,
            ptr,
        })
    }

    /// The lock (Python's `get_lock()`).
    ///
    /// ```
    /// let v = brood::shm::Value::new(0u8)?;
    /// assert!(!v.get_lock().is_owned());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// The value, read under the lock (Python's `.value`). A thread that
    /// holds the lock already (through [`get_lock`](Value::get_lock)) reads
    /// it directly, as Python's `RLock` lets it. Errors: a poisoned lock
    /// (read through [`lock`](Value::lock) to get past it); a
    /// [`ValueGuard`] of this thread is alive (read through it).
    ///
    /// ```
    /// let v = brood::shm::Value::new(5i32)?;
    /// assert_eq!(v.get()?, 5);
    /// let _held = v.get_lock().lock().unwrap();
    /// assert_eq!(v.get()?, 5); // no deadlock: this thread holds the lock
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.access(|v| *v)
    }

    /// Sets the value under the lock (Python's `.value = ...`); directly
    /// when the calling thread holds the lock already, as for
    /// [`get`](Value::get).
    ///
    /// ```
    /// let v = brood::shm::Value::new(5i32)?;
    /// v.set(6)?;
    /// assert_eq!(v.get()?, 6);
    /// {
    ///     // The literal port of `with v.get_lock(): v.value += 1`.
    ///     let _held = v.get_lock().lock().unwrap();
    ///     v.set(v.get()? + 1)?;
    /// }
    /// assert_eq!(v.get()?, 7);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set(&self, value: T) -> Result<()> {
        self.access(|v| *v = value)
    }

    /// The Python typecode it was made with, else `T`'s own (see
    /// [`RawArray::typecode`]).
    ///
    /// ```
    /// use brood::shm::{Typecode, Value};
    /// assert_eq!(Value::new(0u16)?.typecode(), Some(Typecode::UShort));
    /// assert_eq!(Value::with_typecode('q', 0i64)?.typecode(), Some(Typecode::LongLong));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn typecode(&self) -> Option<Typecode> {
        self.raw.typecode()
    }
}

impl<T: Pod> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl<T: Pod> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.raw, &self.lock).serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let (raw, lock) = <(RawValue<T>, Lock)>::deserialize(deserializer)?;
        Ok(Value { raw, lock })
    }
}

/// A fixed-length array of `T` in shared memory with its own [`Lock`]
/// (Python's `multiprocessing.Array`).
///
/// ```
/// use brood::shm::Array;
///
/// let squares = Array::<u64>::zeroed(4)?;
/// let mut child = brood::Process::with_args(
///     |a: Array<u64>| {
///         let mut g = a.lock().unwrap();
///         for (i, x) in g.iter_mut().enumerate() {
///             *x = (i * i) as u64;
///         }
///     },
///     squares.clone(),
/// );
/// child.start()?;
/// child.join()?;
/// assert_eq!(squares.to_vec()?, [0, 1, 4, 9]);
/// # Ok::<(), brood::Error>(())
/// ```
pub struct Array<T: Pod> {
    raw: RawArray<T>,
    lock: Lock,
}

impl<T: Pod> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            raw: self.raw.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: Pod> Array<T> {
    /// A shared array holding a copy of `values`, with a new lock.
    ///
    /// ```
    /// assert_eq!(brood::shm::Array::new(&[1, 2])?.to_vec()?, [1, 2]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new(values: &[T]) -> Result<Array<T>> {
        Ok(Array {
            raw: RawArray::new(values)?,
            lock: Lock::new()?,
        })
    }

    /// A shared array of `len` zeroes, with a new lock (Python's
    /// `Array('i', 10)`).
    ///
    /// ```
    /// assert_eq!(brood::shm::Array::<f64>::zeroed(2)?.to_vec()?, [0.0, 0.0]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn zeroed(len: usize) -> Result<Array<T>> {
        Ok(Array {
            raw: RawArray::zeroed(len)?,
            lock: Lock::new()?,
        })
    }

    /// A shared array guarded by an existing lock.
    ///
    /// ```
    /// let lock = brood::sync::Lock::new()?;
    /// let a = brood::shm::Array::with_lock(&[1u8], lock)?;
    /// assert_eq!(a.len(), 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn with_lock(values: &[T], lock: Lock) -> Result<Array<T>> {
        Ok(Array {
            raw: RawArray::new(values)?,
            lock,
        })
    }

    /// Like [`new`](Array::new), checking a Python typecode against `T`
    /// (Python's `Array('i', [1, 2, 3])`).
    ///
    /// ```
    /// let a = brood::shm::Array::with_typecode('i', &[1i32, 2, 3])?;
    /// assert_eq!(a.typecode().unwrap().as_char(), 'i');
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn with_typecode(code: char, values: &[T]) -> Result<Array<T>> {
        Ok(Array {
            raw: RawArray::with_typecode(code, values)?,
            lock: Lock::new()?,
        })
    }

    /// `len` zeroes of a Python typecode, checked against `T`, with a new
    /// lock (Python's `Array('c', 5)`); [`typecode`](Array::typecode)
    /// gives the code back.
    ///
    /// ```
    /// let a = brood::shm::Array::<u8>::from_typecode('c', 5)?;
    /// assert_eq!(a.typecode().unwrap().as_char(), 'c');
    /// assert_eq!(a.raw()?, [0; 5]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn from_typecode(code: char, len: usize) -> Result<Array<T>> {
        Ok(Array {
            raw: RawArray::from_typecode(code, len)?,
            lock: Lock::new()?,
        })
    }

    /// Runs `f` on the elements under the lock (see [`Value::get`]).
    fn access<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> Result<R> {
        let ptr = self.raw.ptr();
        let _held = held(&self.lock, ptr as usize)?;
        // SAFETY: as in `Value::access`: held lock, no guard of this thread,
        // `len` mapped aligned elements, a reference only for `f`.
        Ok(f(unsafe {
            std::slice::from_raw_parts_mut(ptr, self.raw.len())
        }))
    }

    /// The number of elements.
    ///
    /// ```
    /// assert_eq!(brood::shm::Array::<u8>::zeroed(3)?.len(), 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the array has no elements.
    ///
    /// ```
    /// assert!(!brood::shm::Array::<u8>::zeroed(3)?.is_empty());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Takes the lock; the guard is a mutable slice of the elements.
    /// `Err` when a holder died: the guard is inside.
    ///
    /// ```
    /// let a = brood::shm::Array::new(&[1u32, 2])?;
    /// a.lock().unwrap().iter_mut().for_each(|x| *x *= 10);
    /// assert_eq!(a.to_vec()?, [10, 20]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        let (ptr, len) = (self.raw.ptr(), self.raw.len());
        map_guard(self.lock.lock(), |g| ArrayGuard {
            _lent: lent::Lent::new(ptr as usize),
            _lock: g,
            ptr,
            len,
        })
    }

    /// The lock (Python's `get_lock()`).
    ///
    /// ```
    /// let a = brood::shm::Array::<u8>::zeroed(1)?;
    /// let _held = a.get_lock().lock().unwrap();
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// The element at `index`, read under the lock (directly when the
    /// calling thread holds it already, as for [`Value::get`]).
    ///
    /// ```
    /// let a = brood::shm::Array::new(&[5u8, 6])?;
    /// assert_eq!(a.get(1)?, 6);
    /// let _held = a.get_lock().lock().unwrap();
    /// assert_eq!(a.get(0)?, 5);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<T> {
        self.raw.check_index(index)?;
        self.access(|s| s[index])
    }

    /// Sets the element at `index` under the lock (directly when the
    /// calling thread holds it already).
    ///
    /// ```
    /// let a = brood::shm::Array::new(&[5u8, 6])?;
    /// a.set(0, 1)?;
    /// assert_eq!(a.to_vec()?, [1, 6]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.raw.check_index(index)?;
        self.access(|s| s[index] = value)
    }

    /// A copy of every element, taken under the lock (directly when the
    /// calling thread holds it already).
    ///
    /// ```
    /// assert_eq!(brood::shm::Array::new(&[1i16, 2])?.to_vec()?, [1, 2]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.access(|s| s.to_vec())
    }

    /// The Python typecode it was made with, else `T`'s own (see
    /// [`RawArray::typecode`]).
    ///
    /// ```
    /// use brood::shm::Array;
    /// assert_eq!(Array::<i64>::zeroed(1)?.typecode().unwrap().as_char(), 'l');
    /// assert_eq!(Array::with_typecode('q', &[1i64])?.typecode().unwrap().as_char(), 'q');
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn typecode(&self) -> Option<Typecode> {
        self.raw.typecode()
    }
}

/// Python's char arrays (`Array('c', n)`): the bytes as a string, under
/// the lock.
impl Array<u8> {
    /// The bytes up to the first NUL, or all of them (Python's `.value`).
    ///
    /// ```
    /// let a = brood::shm::Array::<u8>::from_typecode('c', 5)?;
    /// a.set_value(b"ab")?;
    /// assert_eq!(a.value()?, b"ab");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn value(&self) -> Result<Vec<u8>> {
        self.access(|s| until_nul(s.to_vec()))
    }

    /// Every byte, NULs included (Python's `.raw`).
    ///
    /// ```
    /// let a = brood::shm::Array::<u8>::from_typecode('c', 3)?;
    /// a.set_value(b"a")?;
    /// assert_eq!(a.raw()?, b"a\0\0");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn raw(&self) -> Result<Vec<u8>> {
        self.to_vec()
    }

    /// Writes `bytes` from the start, then a NUL if there is room (Python's
    /// `.value = ...`); longer than the array is an error and changes
    /// nothing.
    ///
    /// ```
    /// let a = brood::shm::Array::new(b"abcde")?;
    /// a.set_value(b"x")?;
    /// assert_eq!(a.raw()?, b"x\0cde");
    /// assert!(a.set_value(b"abcdef").is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set_value(&self, bytes: &[u8]) -> Result<()> {
        check_fits(bytes, self.len())?;
        self.access(|s| {
            s[..bytes.len()].copy_from_slice(bytes);
            if let Some(nul) = s.get_mut(bytes.len()) {
                *nul = 0;
            }
        })
    }

    /// Writes `bytes` from the start, adding no NUL (Python's `.raw =
    /// ...`); longer than the array is an error and changes nothing.
    ///
    /// ```
    /// let a = brood::shm::Array::new(b"abcde")?;
    /// a.set_raw(b"xy")?;
    /// assert_eq!(a.raw()?, b"xycde");
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set_raw(&self, bytes: &[u8]) -> Result<()> {
        check_fits(bytes, self.len())?;
        self.access(|s| s[..bytes.len()].copy_from_slice(bytes))
    }
}

impl<T: Pod> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("len", &self.len())
            .field("lock", &self.lock)
            .finish()
    }
}

impl<T: Pod> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.raw, &self.lock).serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let (raw, lock) = <(RawArray<T>, Lock)>::deserialize(deserializer)?;
        Ok(Array { raw, lock })
    }
}
