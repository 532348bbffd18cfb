//! `#[brood::task]`: registers a function under a stable name
//! (`module::path::function`) so that a child started by any start method —
//! or another build of the program — can call it by name.
//!
//! Use it through the `brood` crate:
//!
//! ```
//! #[brood::task]
//! fn add(a: u32, b: u32) -> u32 { a + b }
//! // Called by name with its arguments as a tuple:
//! let mut p = brood::Process::<u32>::task(concat!(module_path!(), "::add"), (1u32, 2u32));
//! p.start().unwrap();
//! assert_eq!(p.join().unwrap(), 3);
//! ```

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{FnArg, ItemFn, ReturnType, parse_macro_input};

/// Registers the function it decorates as a brood task named
/// `module_path!()::name`. The function must not be generic, async or take
/// `self`; its arguments travel as a tuple and its return value through
/// brood's codec, so all must be serde types.
///
/// ```
/// #[brood::task]
/// fn scale(x: f64, by: f64) -> f64 {
///     x * by
/// }
///
/// let name = concat!(module_path!(), "::scale");
/// let mut p = brood::Process::<f64>::task(name, (2.0f64, 21.0f64));
/// p.start().unwrap();
/// assert_eq!(p.join().unwrap(), 42.0);
/// ```
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[brood::task] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    match expand(&func) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(func: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a brood task cannot be generic",
        ));
    }
    if let Some(asyncness) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            asyncness,
            "a brood task cannot be async",
        ));
    }
    let mut names = Vec::new();
    let mut types = Vec::new();
    for (i, arg) in sig.inputs.iter().enumerate() {
        match arg {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(r, "a brood task cannot take self"));
            }
            FnArg::Typed(t) => {
                names.push(format_ident!("__brood_arg{}", i));
                types.push((*t.ty).clone());
            }
        }
    }
    let ident = &sig.ident;
    let ret = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    Ok(quote! {
        #func

        const _: () = {
            fn __brood_trampoline(
                args: &[u8],
            ) -> ::core::result::Result<::std::vec::Vec<u8>, ::brood::task::TaskFail> {
                ::brood::task::__call(args, |(#(#names,)*): (#(#types,)*)| -> #ret { #ident(#(#names),*) })
            }
            ::brood::__private::inventory::submit! {
                ::brood::task::TaskEntry::new(
                    ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident)),
                    __brood_trampoline,
                )
            }
        };
    })
}
