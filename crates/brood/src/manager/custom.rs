//! Custom shared objects (Python's `BaseManager.register(typeid, callable)`),
//! typed on both ends: [`shared_object!`](crate::shared_object) declares a
//! proxy and the methods it may call, so calling a method the proxy does not
//! declare is a compile error, and the server only runs the declared
//! methods of types registered in its own program.

use std::any::Any;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::{Bytes, Op, Out};
use super::proxy::Handle;
use crate::codec;
use crate::error::{Error, Result};

/// A type a manager's server can hold, with the methods clients may call
/// (implemented by [`shared_object!`](crate::shared_object); not by hand).
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Default)]
/// struct Tally { n: u64 }
/// impl Tally {
///     fn add(&mut self, by: u64) -> u64 { self.n += by; self.n }
/// }
/// brood::shared_object! {
///     /// Proxy of a `Tally`.
///     pub struct TallyProxy for Tally {
///         fn add(&mut self, by: u64) -> u64;
///     }
/// }
/// assert_eq!(<Tally as brood::manager::SharedObject>::TYPE_NAME, "Tally");
/// ```
pub trait SharedObject: Serialize + DeserializeOwned + Send + 'static {
    /// The proxy type clients get.
    type Proxy: FromRawProxy;
    /// The name the server knows the type by (its name as written in the
    /// macro; unique within a program).
    const TYPE_NAME: &'static str;
    /// Runs method `method` with its encoded arguments, returning the
    /// encoded result (generated: only declared methods).
    #[doc(hidden)]
    fn __dispatch(&mut self, method: &str, args: &[u8]) -> Result<Vec<u8>>;
}

/// Builds a proxy from the raw proxy (generated code only).
#[doc(hidden)]
pub trait FromRawProxy {
    fn __from_raw(raw: RawProxy) -> Self;
}

/// A proxy without types: what a generated proxy wraps.
#[doc(hidden)]
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RawProxy {
    handle: Handle,
}

impl RawProxy {
    pub(crate) fn new(handle: Handle) -> RawProxy {
        RawProxy { handle }
    }

    /// Calls `method` with `args` (a tuple) and decodes its result.
    #[doc(hidden)]
    pub fn __call<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R> {
        let args = Bytes::from(codec::encode(args)?);
        match self.handle.call_op(Op::Custom(method.to_string(), args))? {
            Out::Item(Some(bytes)) => codec::decode(&bytes),
            other => Err(Error::simple(
                crate::ErrorKind::Codec,
                format!("unexpected reply from the manager server: {other:?}"),
            )),
        }
    }
}

/// Makes a registered type's value from its encoding.
#[doc(hidden)]
pub type MakeFn = fn(&[u8]) -> Result<Box<dyn Any + Send>>;
/// Calls a declared method: the object, the method's name, its arguments.
#[doc(hidden)]
pub type CallFn = fn(&mut (dyn Any + Send), &str, &[u8]) -> Result<Vec<u8>>;

/// One registered type, as the server sees it.
#[doc(hidden)]
pub struct SharedType {
    pub name: &'static str,
    pub make: MakeFn,
    pub call: CallFn,
}

inventory::collect!(SharedType);

#[doc(hidden)]
pub fn __make<T: SharedObject>(init: &[u8]) -> Result<Box<dyn Any + Send>> {
    Ok(Box::new(codec::decode::<T>(init)?))
}

#[doc(hidden)]
pub fn __call<T: SharedObject>(
    obj: &mut (dyn Any + Send),
    method: &str,
    args: &[u8],
) -> Result<Vec<u8>> {
    match obj.downcast_mut::<T>() {
        Some(obj) => obj.__dispatch(method, args),
        None => Err(Error::invalid("a shared object of another type")),
    }
}

/// The registered type called `name`, if this program has one.
pub(crate) fn lookup(name: &str) -> Option<&'static SharedType> {
    inventory::iter::<SharedType>
        .into_iter()
        .find(|t| t.name == name)
}

#[doc(hidden)]
pub fn __unknown_method(type_name: &str, method: &str) -> Error {
    Error::invalid(format!(
        "the shared {type_name} has no method {method:?} a client may call"
    ))
}

/// The return type of a declared method (`()` when none is written).
#[doc(hidden)]
#[macro_export]
macro_rules! __brood_ret {
    () => {
        ()
    };
    ($t:ty) => {
        $t
    };
}

/// Declares a proxy for a type held in a manager's server (Python's
/// `BaseManager.register`), and registers the type.
///
/// The type must be serde-serializable (its initial value travels to the
/// server) and `Send + 'static`. Each declared method becomes a method of
/// the proxy taking the same arguments and returning `brood::Result` of the
/// same value; arguments and results cross through the codec. Only the
/// declared methods can be called, by the proxy (a method it does not
/// declare does not exist: a compile error) and on the server (which runs
/// nothing else). The server must be a program that contains the same
/// declaration (`Manager::start` always is; for `Manager::serve` in
/// another program, declare it there too).
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Default)]
/// struct Counter { n: i64, log: Vec<String> }
///
/// impl Counter {
///     fn add(&mut self, by: i64, why: String) -> i64 {
///         self.n += by;
///         self.log.push(why);
///         self.n
///     }
///     fn get(&self) -> i64 { self.n }
///     fn reset(&mut self) { self.n = 0 }
/// }
///
/// brood::shared_object! {
///     /// A counter living in the manager's server.
///     pub struct CounterProxy for Counter {
///         fn add(&mut self, by: i64, why: String) -> i64;
///         fn get(&self) -> i64;
///         fn reset(&mut self);
///     }
/// }
///
/// let manager = brood::Manager::start()?;
/// let counter: CounterProxy = manager.shared(&Counter::default())?;
/// let mut p = brood::Process::with_args(|c: CounterProxy| c.add(5, "child".into()).unwrap(), counter.clone());
/// p.start()?;
/// p.join()?;
/// assert_eq!(counter.add(1, "parent".into())?, 6);
/// counter.reset()?;
/// assert_eq!(counter.get()?, 0);
/// # Ok::<(), brood::Error>(())
/// ```
///
/// A method the proxy does not declare does not compile:
///
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Default)]
/// # struct Counter { n: i64 }
/// # impl Counter { fn get(&self) -> i64 { self.n } fn delete_everything(&mut self) {} }
/// brood::shared_object! {
///     pub struct CounterProxy for Counter {
///         fn get(&self) -> i64;
///     }
/// }
/// let manager = brood::Manager::start().unwrap();
/// let counter: CounterProxy = manager.shared(&Counter::default()).unwrap();
/// counter.delete_everything(); // no such method on the proxy
/// ```
#[macro_export]
macro_rules! shared_object {
    (
        $(#[$meta:meta])*
        $vis:vis struct $proxy:ident for $ty:ident {
            $(
                $(#[$mmeta:meta])*
                fn $method:ident(& $(mut)? self $(, $arg:ident : $argty:ty)* $(,)?) $(-> $ret:ty)?;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(transparent)]
        $vis struct $proxy {
            raw: $crate::manager::RawProxy,
        }

        impl $proxy {
            $(
                $(#[$mmeta])*
                #[doc = ::core::concat!(
                    "Calls `", ::core::stringify!($method),
                    "` on the object in the manager's server."
                )]
                #[allow(clippy::unused_unit)]
                pub fn $method(&self $(, $arg: $argty)*) -> $crate::Result<$crate::__brood_ret!($($ret)?)> {
                    self.raw.__call(::core::stringify!($method), &($($arg,)*))
                }
            )*
        }

        impl $crate::manager::FromRawProxy for $proxy {
            fn __from_raw(raw: $crate::manager::RawProxy) -> Self {
                $proxy { raw }
            }
        }

        impl $crate::manager::SharedObject for $ty {
            type Proxy = $proxy;
            const TYPE_NAME: &'static str = ::core::stringify!($ty);
            #[allow(unused_variables, clippy::unused_unit)]
            fn __dispatch(&mut self, method: &str, args: &[u8]) -> $crate::Result<::std::vec::Vec<u8>> {
                match method {
                    $(
                        ::core::stringify!($method) => {
                            let ($($arg,)*): ($($argty,)*) = $crate::codec::decode(args)?;
                            let out: $crate::__brood_ret!($($ret)?) = self.$method($($arg),*);
                            $crate::codec::encode(&out)
                        }
                    )*
                    other => ::core::result::Result::Err(
                        $crate::manager::__unknown_method(::core::stringify!($ty), other),
                    ),
                }
            }
        }

        $crate::__private::inventory::submit! {
            $crate::manager::SharedType {
                name: ::core::stringify!($ty),
                make: $crate::manager::__make::<$ty>,
                call: $crate::manager::__call::<$ty>,
            }
        }
    };
}
