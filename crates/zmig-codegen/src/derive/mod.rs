//! The Rust that `#[derive(Zmig)]` expands to. The proc-macro crate only forwards to
//! [`derive_zmig`], so expansion can be unit-tested and shares the parser with the xtask.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};

use crate::spec::{self, MigrationSpec, ModelSpec, Stage};

/// `#[derive(Zmig)]` on `input`: the generated items, or every error as `compile_error!`.
pub fn derive_zmig(input: TokenStream) -> TokenStream {
    let input: syn::DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    match spec::parse_model(&input) {
        Ok(model) => expand(&input, &model),
        Err(error) => error.to_compile_error(),
    }
}

fn expand(input: &syn::DeriveInput, model: &ModelSpec) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let MigrationSpec::Extract(extract) = &model.migration;
    let name = model.migration_name();
    let owner = model.table();
    let new_table = &extract.into.value;
    let stage = stage_tokens(model.stage.value);
    let pairs = extract.columns.iter().map(|c| {
        let source = &c.source.value;
        let target = c.target();
        quote!((#source, #target))
    });

    // Each moved column must exist in the Diesel table: referencing it makes rustc say so, at the
    // column the user wrote, exactly as a typo in a Diesel query would.
    let table_path: syn::Path = syn::parse_str(&model.table_path.value.join("::"))
        .unwrap_or_else(|_| syn::parse_quote!(self));
    let column_checks = extract.columns.iter().map(|c| {
        let column = format_ident!("{}", c.source.value, span = c.source.span);
        let column = if syn::parse_str::<syn::Ident>(&c.source.value).is_ok() {
            column
        } else {
            format_ident!("r#{}", c.source.value, span = c.source.span)
        };
        let table_path = respan(&table_path, c.source.span);
        quote_spanned!(c.source.span=> let _ = #table_path::#column;)
    });

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics ::zmig_runtime::ZmigModel for #ident #ty_generics #where_clause {
                const MIGRATION: ::zmig_runtime::Migration = ::zmig_runtime::Migration::Extract(::zmig_runtime::ExtractInfo {
                    name: #name,
                    owner_table: #owner,
                    new_table: #new_table,
                    columns: &[#(#pairs),*],
                    stage: #stage,
                });
            }

            #[allow(dead_code, clippy::let_underscore_untyped)]
            fn __zmig_moved_columns_exist() {
                #(#column_checks)*
            }
        };
    }
}

fn respan(path: &syn::Path, span: proc_macro2::Span) -> syn::Path {
    let mut path = path.clone();
    for segment in &mut path.segments {
        segment.ident.set_span(span);
    }
    path
}

fn stage_tokens(stage: Stage) -> TokenStream {
    let variant = match stage {
        Stage::Expand => quote!(Expand),
        Stage::DualWrite => quote!(DualWrite),
        Stage::Backfill => quote!(Backfill),
        Stage::ReadNew => quote!(ReadNew),
        Stage::WriteNew => quote!(WriteNew),
        Stage::Contract => quote!(Contract),
    };
    quote!(::zmig_runtime::Stage::#variant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_pretty(input: TokenStream) -> String {
        let output = derive_zmig(input);
        prettyplease::unparse(&syn::parse2(output).expect("the expansion is a file"))
    }

    #[test]
    fn expands_the_caterers_model() {
        insta::assert_snapshot!(expand_pretty(quote! {
            #[diesel(table_name = crate::schema::caterers)]
            #[zmig(extract(into = addresses, columns(street1, r#type as kind, zip: Int8)), stage = "dual_write")]
            pub struct Caterer {
                pub id: i32,
            }
        }));
    }

    #[test]
    fn a_bad_attribute_expands_to_compile_errors_only() {
        let output = derive_zmig(quote! {
            #[diesel(table_name = caterers)]
            #[zmig(extract(into = addresses, columns(street1)), stage = "dual-write")]
            pub struct Caterer;
        })
        .to_string();
        assert!(output.contains("compile_error"), "{output}");
        assert!(output.contains("did you mean"), "{output}");
        assert!(!output.contains("impl"), "{output}");
    }
}
