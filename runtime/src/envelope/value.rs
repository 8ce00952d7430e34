//! [`LocalValue`]: a type-erased message or reply that keeps small values in place.
//!
//! In-process calls move the message to the grain and the reply back without
//! serializing, so both travel type-erased. A `Box<dyn Any>` would cost one heap
//! allocation each way; most messages and replies are a few words (an id, a count, a
//! `String` whose bytes are on the heap anyway), so a value of up to [`INLINE_BYTES`]
//! bytes with at most word alignment is stored inside the `LocalValue` itself, and
//! only larger ones are boxed.

use std::any::{Any, TypeId};
use std::fmt;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};

/// Largest value kept in place (three machine words).
pub const INLINE_BYTES: usize = 3 * std::mem::size_of::<usize>();

/// Room for one in-place value (or a box pointer), word-aligned.
type Slot = MaybeUninit<[usize; 3]>;

/// What a [`LocalValue`] knows about the type it holds.
struct Vt {
    type_id: fn() -> TypeId,
    /// The held value as `&dyn Any`, given the slot.
    as_any: unsafe fn(*const Slot) -> *const (dyn Any + Send),
    /// Drops the held value in the slot.
    drop: unsafe fn(*mut Slot),
    /// Whether the slot holds a `Box<T>` rather than the `T` itself.
    boxed: bool,
}

/// The vtables of `T`, in place and boxed.
struct VtOf<T>(PhantomData<T>);

impl<T: Any + Send> VtOf<T> {
    const INLINE: Vt = Vt {
        type_id: TypeId::of::<T>,
        // SAFETY (both): only called on a slot that holds a `T` (see `LocalValue::new`).
        as_any: |slot| slot.cast::<T>() as *const (dyn Any + Send),
        drop: |slot| unsafe { slot.cast::<T>().drop_in_place() },
        boxed: false,
    };
    const BOXED: Vt = Vt {
        type_id: TypeId::of::<T>,
        // SAFETY (both): only called on a slot that holds a `Box<T>`.
        as_any: |slot| unsafe { &**slot.cast::<Box<T>>() as *const T as *const (dyn Any + Send) },
        drop: |slot| unsafe { slot.cast::<Box<T>>().drop_in_place() },
        boxed: true,
    };
}

/// An owned value of any `Send` type, like `Box<dyn Any + Send>`, but values of up to
/// [`INLINE_BYTES`] bytes (alignment at most a word's) are held in place: no heap
/// allocation.
pub struct LocalValue {
    slot: Slot,
    vt: &'static Vt,
    /// `Send` (every held type is), never `Sync` (a held type may not be).
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

// SAFETY: a `LocalValue` only ever holds a `T: Send` (or a `Box<T>` of one).
unsafe impl Send for LocalValue {}

impl LocalValue {
    /// Wraps `value`, in place if it fits.
    pub fn new<T: Any + Send>(value: T) -> Self {
        let mut slot = Slot::uninit();
        let vt: &'static Vt = if std::mem::size_of::<T>() <= INLINE_BYTES
            && std::mem::align_of::<T>() <= std::mem::align_of::<Slot>()
        {
            // SAFETY: `T` fits the slot's size and alignment.
            unsafe { slot.as_mut_ptr().cast::<T>().write(value) };
            &VtOf::<T>::INLINE
        } else {
            // SAFETY: a `Box<T>` is one word.
            unsafe { slot.as_mut_ptr().cast::<Box<T>>().write(Box::new(value)) };
            &VtOf::<T>::BOXED
        };
        Self {
            slot,
            vt,
            _not_sync: PhantomData,
        }
    }

    /// The `TypeId` of the held value.
    pub fn held_type_id(&self) -> TypeId {
        (self.vt.type_id)()
    }

    /// True when the value is stored in place (no heap allocation of its own).
    pub fn is_inline(&self) -> bool {
        !self.vt.boxed
    }

    /// The held value.
    pub fn as_any(&self) -> &(dyn Any + Send) {
        // SAFETY: the slot holds what `vt` describes; the reference borrows `self`.
        unsafe { &*(self.vt.as_any)(&self.slot) }
    }

    /// The held value, if it is a `T`; else `self` back.
    pub fn downcast<T: Any + Send>(self) -> Result<T, Self> {
        if self.held_type_id() != TypeId::of::<T>() {
            return Err(self);
        }
        let me = ManuallyDrop::new(self);
        let slot = me.slot.as_ptr();
        // SAFETY: the slot holds a `T` (or a `Box<T>`, per `vt.boxed`), and `me` is
        // never dropped, so the value is moved out exactly once.
        Ok(unsafe {
            if me.vt.boxed {
                *slot.cast::<Box<T>>().read()
            } else {
                slot.cast::<T>().read()
            }
        })
    }
}

impl Drop for LocalValue {
    fn drop(&mut self) {
        // SAFETY: the slot holds what `vt` describes, and is dropped once.
        unsafe { (self.vt.drop)(&mut self.slot) }
    }
}

impl fmt::Debug for LocalValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_inline() {
            "LocalValue(inline)"
        } else {
            "LocalValue(boxed)"
        })
    }
}

#[cfg(test)]
mod tests;
