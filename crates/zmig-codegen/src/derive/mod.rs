//! The Rust that `#[derive(Zmig)]` expands to. The proc-macro crate only forwards to
//! [`derive_zmig`], so expansion can be unit-tested and shares the parser with the xtask.

mod rust_side;

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};

use crate::spec::{self, ExtractSpec, MigrationSpec, ModelSpec, Stage, SwapSpec};

/// What the derive generates besides what every build gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeriveOptions {
    /// Also the `_async` variants of the readers, writers and `sync = app` wrappers, over
    /// `diesel_async::AsyncPgConnection` (zmig-derive's feature `async`, which zmig-runtime's
    /// `async` turns on: a proc macro sees only its own features, not the user crate's).
    ///
    /// They are added beside the sync ones, never instead: Cargo unifies features, so a crate
    /// whose dependency turned `async` on must still compile its sync calls. Hence names of
    /// their own on the same types, the sync name with `_async` (`Address::find_for_async`,
    /// `Caterer::zmig_insert_async`), found where the sync one is and telling at the call
    /// that it is awaited; a module of async twins is not possible, as they are associated
    /// functions of the user's types.
    pub async_variants: bool,
}

/// `#[derive(Zmig)]` on `input`: the generated items, or every error as `compile_error!`. The
/// sync API only; see [`derive_zmig_with`].
pub fn derive_zmig(input: TokenStream) -> TokenStream {
    derive_zmig_with(input, DeriveOptions::default())
}

/// `#[derive(Zmig)]` on `input` with `options`.
pub fn derive_zmig_with(input: TokenStream, options: DeriveOptions) -> TokenStream {
    let input: syn::DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    match spec::parse_model(&input) {
        Ok(model) => expand(&input, &model, options),
        Err(error) => error.to_compile_error(),
    }
}

fn expand(input: &syn::DeriveInput, model: &ModelSpec, options: DeriveOptions) -> TokenStream {
    match &model.migration {
        MigrationSpec::Extract(extract) => expand_extract(input, model, extract, options),
        MigrationSpec::Swap(swap) => expand_swap(input, model, swap),
    }
}

fn expand_extract(
    input: &syn::DeriveInput,
    model: &ModelSpec,
    extract: &ExtractSpec,
    options: DeriveOptions,
) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let name = model.migration_name();
    let owner = model.table();
    let new_table = &extract.into.value;
    let stage_value = model.stage.value;
    let stage = stage_tokens(stage_value);
    let pairs = extract.columns.iter().map(|c| {
        let source = &c.source.value;
        let target = c.target();
        quote!((#source, #target))
    });

    let mut errors = crate::spec::Ctxt::new();
    if stage_value >= Stage::WriteNew {
        check_owner_stopped_writing(&mut errors, input, extract, stage_value);
    }
    // With the model itself wrong for its stage, generated code would only add follow-up errors.
    let rust_side = match rust_side::RustSide::new(input, model, extract) {
        Ok(Some(side)) if !errors.has_errors() => side.expand(options),
        Ok(_) => TokenStream::new(),
        Err(error) => error.to_compile_error(),
    };

    // Until write_new, each moved column must exist in the owner's `table!`: referencing it
    // makes rustc say so, at the column the user wrote, as a typo in a Diesel query would. From
    // write_new on the shim removes them from `table!`, and the row struct checks the new table.
    let column_checks = (stage_value < Stage::WriteNew).then(|| {
        let table_path = table_path(model);
        let checks = extract.columns.iter().map(|c| {
            let column = ident_for(&c.source.value, c.source.span);
            let table_path = respan(&table_path, c.source.span);
            quote_spanned!(c.source.span=> let _ = #table_path::#column;)
        });
        quote! {
            #[allow(dead_code, clippy::let_underscore_untyped)]
            fn __zmig_moved_columns_exist() {
                #(#checks)*
            }
        }
    });
    let errors = errors.check().err().map(|e| e.to_compile_error());

    quote! {
        #errors
        #rust_side
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
            #column_checks
        };
    }
}

/// A swap's model keeps reading and writing its table by name at every stage (through the view
/// until finalize), so there is no Rust side to generate: the `ZmigModel` impl, and checks that
/// every column the attribute names is in `table!` and that a type changed without an
/// expression widens.
fn expand_swap(input: &syn::DeriveInput, model: &ModelSpec, swap: &SwapSpec) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let name = model.migration_name();
    let table = model.table();
    let stage = stage_tokens(model.stage.value);
    let pairs = swap.columns.iter().map(|c| {
        let column = &c.column.value;
        let new_type = &c.new_type.value;
        quote!((#column, #new_type))
    });

    // Naming a column makes rustc check it exists, at the tokens the user wrote, as a typo in a
    // Diesel query would; a referencing table sits beside the swapped one (same module path).
    // Each column is named once, so a typo is one error.
    let table_path = table_path(model);
    // Once finalize has run, `diesel print-schema` writes the new types into `table!`: from that
    // stage on the old type is no longer there to compare with.
    let compare_types = model.stage.value < Stage::Finalize;
    let columns = swap.columns.iter().map(|c| {
        let column = ident_for(&c.column.value, c.column.span);
        let table_path = respan(&table_path, c.column.span);
        if compare_types && c.cast.is_none() {
            let to = ident_for(&c.new_type.value, c.new_type.span);
            quote_spanned!(c.new_type.span=>
                __zmig_widens::<_, ::diesel::sql_types::#to>(#table_path::#column);
            )
        } else {
            quote_spanned!(c.column.span=> let _ = #table_path::#column;)
        }
    });
    let references = swap.references.iter().map(|r| {
        let mut other = respan(&table_path, r.table.span);
        if let Some(last) = other.segments.last_mut() {
            last.ident = ident_for(&r.table.value, r.table.span);
        }
        let column = ident_for(&r.column.value, r.column.span);
        quote_spanned!(r.column.span=> let _ = #other::#column;)
    });
    // The columns of `unique(...)`, each once and not again when `columns(...)` named it.
    let mut named: Vec<&str> = swap
        .columns
        .iter()
        .map(|c| c.column.value.as_str())
        .collect();
    let unique_columns: Vec<TokenStream> = swap
        .unique
        .iter()
        .flat_map(|u| &u.columns)
        .filter(|c| {
            let first = !named.contains(&c.value.as_str());
            named.push(&c.value);
            first
        })
        .map(|c| {
            let column = ident_for(&c.value, c.span);
            let table_path = respan(&table_path, c.span);
            quote_spanned!(c.span=> let _ = #table_path::#column;)
        })
        .collect();
    // zmig's own error for a referencing table not in scope, once per table.
    let mut probed: Vec<&str> = Vec::new();
    let reference_probes: Vec<TokenStream> = swap
        .references
        .iter()
        .filter(|r| {
            let first = !probed.contains(&r.table.value.as_str());
            probed.push(&r.table.value);
            first
        })
        .map(|r| {
            let other = ident_for(&r.table.value, r.table.span);
            let mut scope = table_path.clone();
            let (message, note) = if scope.segments.len() > 1 {
                scope.segments.pop();
                scope.segments.pop_punct();
                let module = model.table_path.value[..model.table_path.value.len() - 1].join("::");
                (
                    format!("no `table!` for the referencing table `{other}` in `{module}`, beside `{table}`"),
                    format!("help: `references(...)` names tables whose `table!` is beside `{table}`'s, in `{module}`"),
                )
            } else {
                scope = syn::parse_quote!(self);
                (
                    format!(
                        "the referencing table `{other}` is not in scope: `references({other}.{})` needs its `table!` here, as `table_name = {table}` needs `{table}`'s",
                        r.column.value
                    ),
                    format!(
                        "help: check its name, and import it where `{table}` comes from, e.g. `use crate::schema::{other};` beside `use crate::schema::{table};`, \
                         or name the table by its path, `#[diesel(table_name = crate::schema::{table})]`, and zmig finds `{other}` beside it"
                    ),
                )
            };
            table_probe(&other, &respan(&scope, r.table.span), r.table.span, &message, &note)
        })
        .collect();
    let widening = compare_types.then(|| {
        quote! {
            #[diagnostic::on_unimplemented(
                message = "a column whose type changes without an expression must widen, and `{Self}` does not widen to `{To}`",
                label = "not a widening of the column's type in `table!`",
                note = "zmig widens Int2 → Int4 → Int8 → Numeric, Float4 → Float8, Varchar → Text (or takes `table!` at the new type already, for one release across the swap); for any other change give the SQL that computes the new value: `column: Type = \"...\"`"
            )]
            trait __ZmigWidensTo<To> {}
            impl __ZmigWidensTo<::diesel::sql_types::Integer> for ::diesel::sql_types::SmallInt {}
            impl __ZmigWidensTo<::diesel::sql_types::BigInt> for ::diesel::sql_types::SmallInt {}
            impl __ZmigWidensTo<::diesel::sql_types::Numeric> for ::diesel::sql_types::SmallInt {}
            impl __ZmigWidensTo<::diesel::sql_types::BigInt> for ::diesel::sql_types::Integer {}
            impl __ZmigWidensTo<::diesel::sql_types::Numeric> for ::diesel::sql_types::Integer {}
            impl __ZmigWidensTo<::diesel::sql_types::Numeric> for ::diesel::sql_types::BigInt {}
            impl __ZmigWidensTo<::diesel::sql_types::Double> for ::diesel::sql_types::Float {}
            // Diesel's `Varchar` and `Bpchar` are `Text`; `generate` tells them apart in schema.rs.
            impl __ZmigWidensTo<::diesel::sql_types::Text> for ::diesel::sql_types::Text {}
            // `table!` at the new type already: the one-release way, whose schema.rs says the new
            // type before prepare (`generate` reads the old one from the database).
            impl __ZmigWidensTo<::diesel::sql_types::SmallInt> for ::diesel::sql_types::SmallInt {}
            impl __ZmigWidensTo<::diesel::sql_types::Integer> for ::diesel::sql_types::Integer {}
            impl __ZmigWidensTo<::diesel::sql_types::BigInt> for ::diesel::sql_types::BigInt {}
            impl __ZmigWidensTo<::diesel::sql_types::Numeric> for ::diesel::sql_types::Numeric {}
            impl __ZmigWidensTo<::diesel::sql_types::Float> for ::diesel::sql_types::Float {}
            impl __ZmigWidensTo<::diesel::sql_types::Double> for ::diesel::sql_types::Double {}
            impl<From: __ZmigWidensTo<To>, To> __ZmigWidensTo<To> for ::diesel::sql_types::Nullable<From> {}
            fn __zmig_widens<Column: ::diesel::Expression, To>(_: Column)
            where
                Column::SqlType: __ZmigWidensTo<To>,
            {
            }
        }
    });

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics ::zmig_runtime::ZmigModel for #ident #ty_generics #where_clause {
                const MIGRATION: ::zmig_runtime::Migration = ::zmig_runtime::Migration::Swap(::zmig_runtime::SwapInfo {
                    name: #name,
                    table: #table,
                    columns: &[#(#pairs),*],
                    stage: #stage,
                });
            }
            #(#reference_probes)*
            #[allow(dead_code, clippy::let_underscore_untyped)]
            fn __zmig_swap_columns_exist() {
                #widening
                #(#columns)*
                #(#references)*
                #(#unique_columns)*
            }
        };
    }
}

/// From write_new on, the application stops writing the old columns: the owner model must not
/// carry them any more (the shim removes them from `table!`, and contract drops them).
fn check_owner_stopped_writing(
    cx: &mut crate::spec::Ctxt,
    input: &syn::DeriveInput,
    extract: &ExtractSpec,
    stage: Stage,
) {
    let syn::Data::Struct(data) = &input.data else {
        return;
    };
    for field in &data.fields {
        let Some(column) = field_column(field) else {
            continue;
        };
        if let Some(moved) = extract.columns.iter().find(|c| c.source.value == column) {
            cx.error_spanned_by(
                field.ident.as_ref().map(|i| i.to_token_stream()).unwrap_or_else(|| field.ty.to_token_stream()),
                format!(
                    "at stage `{stage}` `{}` no longer reads or writes the old column `{column}`: it lives in `{}` now\n\
                     help: remove this field and use the generated `{}` (`{}` there)",
                    input.ident,
                    extract.into.value,
                    extract.model_name(),
                    moved.target(),
                ),
            );
        }
    }
}

/// The column a field maps to: `#[diesel(column_name = …)]` or its own name.
fn field_column(field: &syn::Field) -> Option<String> {
    let mut column = field
        .ident
        .as_ref()
        .map(|i| syn::ext::IdentExt::unraw(i).to_string());
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("diesel")) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("column_name") {
                let value: syn::Ident = meta
                    .value()
                    .and_then(|v| syn::ext::IdentExt::parse_any(v))?;
                column = Some(syn::ext::IdentExt::unraw(&value).to_string());
            } else if meta.input.peek(syn::Token![=]) {
                let _: syn::Expr = meta.value()?.parse()?;
            } else if meta.input.peek(syn::token::Paren) {
                let content;
                syn::parenthesized!(content in meta.input);
                let _: TokenStream = content.parse()?;
            }
            Ok(())
        });
    }
    column
}

/// The owner's `table!` path as written in `table_name`.
fn table_path(model: &ModelSpec) -> syn::Path {
    let segments = model.table_path.value.iter().map(|s| match s.as_str() {
        // Path keywords are identifiers in a path, and can never be raw.
        "crate" | "self" | "super" => syn::Ident::new(s, model.table_path.span),
        _ => ident_for(s, model.table_path.span),
    });
    syn::parse_quote!(#(#segments)::*)
}

/// `name` as an identifier, raw when it is a keyword (`r#type`). Only for names that are
/// identifiers already (parsed as such from the attribute or `table!`).
fn ident_for(name: &str, span: proc_macro2::Span) -> syn::Ident {
    rust_ident(name, span).unwrap_or_else(|| syn::Ident::new("__zmig_not_an_identifier", span))
}

/// `name` as a Rust identifier, raw for keywords; `None` when it cannot be one ("SKU Code").
pub(crate) fn rust_ident(name: &str, span: proc_macro2::Span) -> Option<syn::Ident> {
    let shaped = name
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    if !shaped || name == "_" {
        return None;
    }
    if syn::parse_str::<syn::Ident>(name).is_ok() {
        Some(syn::Ident::new(name, span))
    } else if ["self", "Self", "super", "crate"].contains(&name) {
        None
    } else {
        Some(syn::Ident::new_raw(name, span))
    }
}

/// zmig's own error, `message` with `note`, spanned at `span`, when no `table!` named `table`
/// can be found in `scope`, where the generated code looks for it; rustc's would suggest
/// importing the wrong item (`…::dsl::table`).
///
/// Rust has no "is this name in scope" test, so this uses name shadowing: an inner block
/// glob-imports `scope`, and an outer block glob-imports a stand-in of the same name. A name in
/// an inner block's scope hides the outer one, so the stand-in is reached only when the real
/// `table!` is missing, and naming it asks for a trait nothing implements, whose message is
/// ours. (Both are globs in blocks and the name is only used in a type, so import resolution
/// never sees the two meet.)
pub(super) fn table_probe(
    table: &syn::Ident,
    scope: &syn::Path,
    span: proc_macro2::Span,
    message: &str,
    note: &str,
) -> TokenStream {
    let probe = quote_spanned!(span=> #table::table);
    quote! {
        const _: () = {
            #[allow(non_camel_case_types, dead_code, unreachable_pub)]
            mod __zmig_stand_in {
                #[diagnostic::on_unimplemented(message = #message, label = "not found", note = #note)]
                pub trait TableNotFound {
                    type Table;
                }
                // One impl, so rustc does not suggest adding one.
                pub enum Never {}
                impl TableNotFound for Never {
                    type Table = ();
                }
                pub mod #table {
                    pub type table = <() as super::TableNotFound>::Table;
                }
            }
            #[allow(unused_imports)]
            use __zmig_stand_in::*;
            const _: () = {
                #[allow(unused_imports)]
                use #scope::*;
                #[allow(dead_code)]
                fn __zmig_table_exists(_: #probe) {}
            };
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

/// `::zmig_runtime::Stage::DualWrite`: the runtime's `Stage` is this one, re-exported.
fn stage_tokens(stage: Stage) -> TokenStream {
    let variant = syn::Ident::new(stage.variant_name(), proc_macro2::Span::call_site());
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
    fn expands_readers_and_writers_at_write_new() {
        insta::assert_snapshot!(expand_pretty(quote! {
            #[diesel(table_name = crate::schema::caterers)]
            #[zmig(extract(into = addresses, columns(street1, zip)), stage = "write_new")]
            pub struct Caterer {
                pub id: i32,
                pub name: String,
            }
        }));
    }

    #[test]
    fn expands_app_mode_wrappers_at_dual_write() {
        insta::assert_snapshot!(expand_pretty(quote! {
            #[diesel(table_name = caterers)]
            #[zmig(extract(into = addresses, columns(street1), sync = app, model = PostalAddress), stage = "dual_write")]
            pub(crate) struct Caterer {
                pub id: i32,
                pub street1: String,
            }
        }));
    }

    fn expand_pretty_async(input: TokenStream) -> String {
        let output = derive_zmig_with(
            input,
            DeriveOptions {
                async_variants: true,
            },
        );
        prettyplease::unparse(&syn::parse2(output).expect("the expansion is a file"))
    }

    /// With `async_variants`, the `_async` readers and writers come beside the sync ones.
    #[test]
    fn expands_async_readers_and_writers_at_write_new() {
        let input = quote! {
            #[diesel(table_name = crate::schema::caterers)]
            #[zmig(extract(into = addresses, columns(street1, zip)), stage = "write_new")]
            pub struct Caterer {
                pub id: i32,
                pub name: String,
            }
        };
        let sync = expand_pretty(input.clone());
        let both = expand_pretty_async(input);
        assert!(!sync.contains("_async"), "{sync}");
        insta::assert_snapshot!(both);
    }

    #[test]
    fn expands_async_app_mode_wrappers_at_dual_write() {
        insta::assert_snapshot!(expand_pretty_async(quote! {
            #[diesel(table_name = caterers)]
            #[zmig(extract(into = addresses, columns(street1), sync = app, model = PostalAddress), stage = "dual_write")]
            pub(crate) struct Caterer {
                pub id: i32,
                pub street1: String,
            }
        }));
    }

    /// A non-unique owner key: the async readers and writers deal in all of an owner's rows.
    #[test]
    fn expands_async_readers_and_writers_of_a_non_unique_key() {
        insta::assert_snapshot!(expand_pretty_async(quote! {
            #[diesel(table_name = crate::schema::users)]
            #[zmig(extract(into = accounts, key = user_id, primary_key = account_id, unique_key = false,
                           columns(account_id: Int8, account_name as name)), stage = "write_new")]
            pub struct User {
                pub id: i64,
            }
        }));
    }

    #[test]
    fn expands_the_cars_swap() {
        insta::assert_snapshot!(expand_pretty(quote! {
            #[diesel(table_name = crate::schema::cars)]
            #[zmig(
                swap(columns(id: Int8, mileage: Int2 = "least(mileage, 32767)::smallint"), references(trips.car_id), name = cars_bigint),
                stage = "prepare"
            )]
            pub struct Car {
                pub id: i32,
            }
        }));
    }

    #[test]
    fn a_swap_at_finalize_no_longer_compares_types() {
        let output = derive_zmig(quote! {
            #[diesel(table_name = cars)]
            #[zmig(swap(columns(id: Int8), references(trips.car_id)), stage = "finalize")]
            pub struct Car;
        })
        .to_string();
        assert!(output.contains("Stage :: Finalize"), "{output}");
        assert!(output.contains("let _ = trips :: car_id"), "{output}");
        assert!(output.contains("let _ = cars :: id"), "{output}");
        assert!(!output.contains("__zmig_widens"), "{output}");
    }

    /// The row struct's field types: `rust_types` first, then the model's field (a renamed
    /// column keeps its source field's type; a widened one does not), then `RustType`.
    #[test]
    fn row_fields_take_the_models_types() {
        let output = expand_pretty(quote! {
            #[diesel(table_name = crate::schema::users, primary_key(uid))]
            #[zmig(
                extract(into = accounts, columns(balance, gh_login as login, visits: Int8, note, seen),
                        rust_types(seen = time::OffsetDateTime)),
                stage = "read_new"
            )]
            pub struct User {
                pub uid: UserId,
                pub balance: bigdecimal::BigDecimal,
                #[diesel(column_name = gh_login)]
                pub github: Option<String>,
                pub visits: i32,
                pub seen: chrono::DateTime<chrono::Utc>,
            }
        });
        for field in [
            "pub user_id: UserId,",
            "pub balance: bigdecimal::BigDecimal,",
            "pub login: Option<String>,",
            "pub visits: <<crate::schema::accounts::visits as ::diesel::Expression>::SqlType as ::zmig_runtime::RustType>::Rust,",
            // Not in the model: the fallback.
            "pub note: <<crate::schema::accounts::note as ::diesel::Expression>::SqlType as ::zmig_runtime::RustType>::Rust,",
            "pub seen: time::OffsetDateTime,",
            "owner_key: UserId,",
        ] {
            assert!(output.contains(field), "{field} in\n{output}");
        }
    }

    #[test]
    fn rust_types_name_moved_columns_by_their_new_names() {
        let errors = |attr: TokenStream| {
            derive_zmig(quote! {
                #[diesel(table_name = users)]
                #[zmig(#attr, stage = "read_new")]
                pub struct User { pub id: i64 }
            })
            .to_string()
        };
        let renamed = errors(quote!(extract(
            into = accounts,
            columns(gh_login as login),
            rust_types(gh_login = String)
        )));
        assert!(
            renamed.contains("`gh_login` is renamed: write `login = …`"),
            "{renamed}"
        );
        let unknown = errors(quote!(extract(
            into = accounts,
            columns(login),
            rust_types(user_id = i64)
        )));
        assert!(
            unknown.contains(
                "`rust_types` names `user_id`, which is not a column moved by `columns(...)`"
            ),
            "{unknown}"
        );
        let twice = errors(quote!(extract(
            into = accounts,
            columns(login),
            rust_types(login = String, login = String)
        )));
        assert!(
            twice.contains("`login` is listed twice in `rust_types(...)`"),
            "{twice}"
        );
        let not_a_type = errors(quote!(extract(
            into = accounts,
            columns(login),
            rust_types(login = 3)
        )));
        assert!(
            not_a_type.contains("expected `login = <Rust type>`"),
            "{not_a_type}"
        );
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
