//! Contexts (Python's `get_context`): a start method to build processes
//! with. The start methods themselves and the process-wide default live one
//! layer down, in `start_method.rs`, below `Process`; a `Context` sits on
//! top of `Process`.
//!
//! ```
//! use brood::{Context, StartMethod};
//!
//! let ctx = Context::new(StartMethod::Spawn);
//! let mut p = ctx.process(|| 6 * 7);
//! p.start()?;
//! assert_eq!(p.join()?, 42);
//! # Ok::<(), brood::Error>(())
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::process::{Builder, Process};
// Re-exported at the old path for code written before the move; modules
// below `Process` name `crate::start_method` (this module is above it).
pub(crate) use crate::start_method::{StartMethod, get_start_method};

/// A start method to build processes with (Python's `get_context(method)`).
///
/// ```
/// use brood::{Context, StartMethod};
/// let ctx = brood::get_context(Some(StartMethod::ForkServer));
/// assert_eq!(ctx.start_method(), StartMethod::ForkServer);
/// let mut p = ctx.process_with(|x: u32| x + 1, 41);
/// p.start().unwrap();
/// assert_eq!(p.join().unwrap(), 42);
/// # let _ = Context::new(StartMethod::Fork);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

/// The context for `method`, or for the default start method when `None`.
///
/// ```
/// let ctx = brood::get_context(None);
/// assert_eq!(ctx.start_method(), brood::get_start_method());
/// ```
pub fn get_context(method: Option<StartMethod>) -> Context {
    Context::new(method.unwrap_or_else(get_start_method))
}

impl Context {
    /// A context that starts children with `method`.
    ///
    /// ```
    /// let ctx = brood::Context::new(brood::StartMethod::Spawn);
    /// assert_eq!(ctx.start_method(), brood::StartMethod::Spawn);
    /// ```
    pub fn new(method: StartMethod) -> Context {
        Context { method }
    }

    /// This context's start method.
    ///
    /// ```
    /// assert_eq!(brood::Context::new(brood::StartMethod::Fork).start_method(), brood::StartMethod::Fork);
    /// ```
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// A process builder that uses this context's start method.
    ///
    /// ```
    /// let ctx = brood::Context::new(brood::StartMethod::Spawn);
    /// let mut p = ctx.builder().name("w").target(|| 1);
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap(), 1);
    /// ```
    pub fn builder(&self) -> Builder {
        Builder::default().start_method(self.method)
    }

    /// A process running `f` (which must capture nothing) under this
    /// context's start method.
    ///
    /// ```
    /// let mut p = brood::Context::new(brood::StartMethod::ForkServer).process(|| "hi".to_string());
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap(), "hi");
    /// ```
    pub fn process<F, R>(&self, f: F) -> Process<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.builder().target(f)
    }

    /// A process running `f(args)` under this context's start method; `args`
    /// cross to the child through the codec (Python's `args=`).
    ///
    /// ```
    /// let mut p = brood::Context::new(brood::StartMethod::Spawn).process_with(|(a, b): (u8, u8)| a + b, (2, 3));
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap(), 5);
    /// ```
    pub fn process_with<F, A, R>(&self, f: F, args: A) -> Process<R>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.builder().target_with(f, args)
    }
}
