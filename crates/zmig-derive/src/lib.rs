//! `#[derive(Zmig)]`: the entry point and nothing else. Parsing, validation and expansion live in
//! `zmig-codegen`, which `cargo xtask zmig` uses too, so the two never disagree.

use proc_macro::TokenStream;

/// Reads `#[zmig(...)]` on a Diesel model; see the `zmig_runtime` docs for the attribute.
#[proc_macro_derive(Zmig, attributes(zmig))]
pub fn derive_zmig(input: TokenStream) -> TokenStream {
    let options = zmig_codegen::derive::DeriveOptions {
        async_variants: cfg!(feature = "async"),
    };
    zmig_codegen::derive::derive_zmig_with(input.into(), options).into()
}
