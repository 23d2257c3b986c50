//! The Rust side of an extract, generated per stage: the new table's row struct, readers
//! (read_new on), writers (write_new on), and the `sync = app` wrappers (dual_write on).
//!
//! A field's type is, first found: the type named in `rust_types(column = Type)`; the type of
//! the model's field for the column, unless the column is widened (a renamed column keeps its
//! source field's type; the owner key takes the model's primary-key field's type); else the
//! new table's `table!` type through `zmig_runtime::RustType`. The model is the source of truth
//! while it carries the fields (until read_new); from write_new on it no longer does, and
//! `rust_types` or the fallback take over.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};

use super::{field_column, respan, rust_ident, table_path};
use crate::spec::{default_key_column, ExtractSpec, ModelSpec, Stage, SyncMode};

pub(super) struct RustSide<'a> {
    input: &'a syn::DeriveInput,
    model: &'a ModelSpec,
    extract: &'a ExtractSpec,
    /// The row struct's name (`Address`) and its snake case for method names (`address`).
    row: syn::Ident,
    row_snake: String,
    owner_table: syn::Path,
    new_table: syn::Path,
    key: syn::Ident,
    owner_pk: syn::Ident,
    /// The moved columns' names in the new table: the row struct's fields.
    targets: Vec<syn::Ident>,
    /// Each target's Rust type, in the order of `targets`.
    target_types: Vec<TokenStream>,
    key_type: TokenStream,
    /// The new table's `table!` name, spanned on `into = …`.
    into: syn::Ident,
    /// Where the new table is looked up: the module holding the owner's `table!` when
    /// `table_name` is a path, the model's own module (`self`) when it is a bare name.
    new_table_scope: syn::Path,
    /// With `unique_key = false`, the primary key's field: an owner then has any number of rows,
    /// and the readers and writers deal in all of them.
    non_unique_pk: Option<syn::Ident>,
}

impl<'a> RustSide<'a> {
    /// `None` at stages that generate no Rust side; an error (spanned) when the stage needs Rust
    /// names that the attribute does not give.
    pub(super) fn new(
        input: &'a syn::DeriveInput,
        model: &'a ModelSpec,
        extract: &'a ExtractSpec,
    ) -> syn::Result<Option<Self>> {
        let needed = model.stage.value >= Stage::ReadNew
            || (extract.sync_mode() == SyncMode::App && model.stage.value >= Stage::DualWrite);
        if !needed {
            return Ok(None);
        }
        let span = Span::call_site();
        let name_error = |what: &str, name: &str, at: Span, help: &str| {
            syn::Error::new(at, format!("the Rust side generated at this stage needs {what} `{name}` to be a Rust identifier\nhelp: {help}"))
        };
        let into = rust_ident(&extract.into.value, extract.into.span);
        let row_name = extract.model_name();
        let row = rust_ident(
            &row_name,
            extract
                .model
                .as_ref()
                .map(|m| m.span)
                .unwrap_or(extract.into.span),
        );
        let key_name = extract
            .key
            .as_ref()
            .map(|k| k.value.clone())
            .unwrap_or_else(|| default_key_column(model.table()));
        let key = rust_ident(
            &key_name,
            extract.key.as_ref().map(|k| k.span).unwrap_or(span),
        );
        let mut targets = Vec::new();
        let mut bad_target = None;
        for c in &extract.columns {
            let at = c.rename.as_ref().unwrap_or(&c.source).span;
            match rust_ident(c.target(), at) {
                Some(ident) => targets.push(ident),
                None => bad_target = bad_target.or(Some((c.target().to_owned(), at))),
            }
        }
        let owner_pk = model
            .primary_key
            .first()
            .and_then(|pk| rust_ident(&pk.value, pk.span));
        match (into, row, key, owner_pk, bad_target) {
            (Some(into), Some(row), Some(key), Some(owner_pk), None) => {
                let owner_table = table_path(model);
                // The new table's `table!` sits beside the owner's: print-schema writes both
                // into one module, so a path in `table_name` finds it without an import.
                let mut new_table = owner_table.clone();
                if let Some(last) = new_table.segments.last_mut() {
                    // Spanned at the derive, not at `into = …`: when the `table!` is missing
                    // the probe below reports it there, and rustc's own error on these uses
                    // would otherwise suggest importing the wrong item at the same tokens.
                    last.ident = syn::Ident::new(&into.to_string(), Span::call_site());
                }
                let mut new_table_scope = owner_table.clone();
                if new_table_scope.segments.len() > 1 {
                    new_table_scope.segments.pop();
                    new_table_scope.segments.pop_punct();
                } else {
                    new_table_scope = syn::parse_quote!(self);
                }
                let new_table_scope = respan(&new_table_scope, extract.into.span);
                let fields = model_field_types(input);
                let fallback = |column: &syn::Ident, at: Span| {
                    quote_spanned!(at=> <<#new_table::#column as ::diesel::Expression>::SqlType as ::zmig_runtime::RustType>::Rust)
                };
                let target_types = extract
                    .columns
                    .iter()
                    .zip(&targets)
                    .map(|(c, target)| {
                        let named = extract.rust_types.iter().find(|r| r.column.value == c.target());
                        match (named, c.widen.as_ref(), fields.get(c.source.value.as_str())) {
                            (Some(named), ..) => named.tokens.clone(),
                            // A widened column's model field still has the narrow type.
                            (None, None, Some(field)) => field.to_token_stream(),
                            _ => fallback(target, c.source.span),
                        }
                    })
                    .collect();
                let key_type = match model.primary_key.first().and_then(|pk| fields.get(pk.value.as_str())) {
                    Some(field) => field.to_token_stream(),
                    None => fallback(&key, extract.key.as_ref().map(|k| k.span).unwrap_or(extract.into.span)),
                };
                let non_unique_pk = match &extract.primary_key {
                    Some(pk) if !extract.owner_key_unique() => {
                        targets.iter().find(|t| **t == pk.value).cloned()
                    }
                    _ => None,
                };
                Ok(Some(RustSide {
                    target_types,
                    key_type,
                    into,
                    new_table_scope,
                    input,
                    model,
                    extract,
                    non_unique_pk,
                    row_snake: snake_case(&row.to_string()),
                    row,
                    owner_table,
                    new_table,
                    key,
                    owner_pk,
                    targets,
                }))
            }
            (None, ..) => Err(name_error("the new table", &extract.into.value, extract.into.span, "name the new table with an identifier (`into = item_details`); the database name can keep its case through `#[sql_name]` in `table!`")),
            (_, None, ..) => Err(name_error("the row struct", &row_name, extract.into.span, "name it with `model = ItemDetail`")),
            (_, _, None, ..) => Err(name_error("the owner key", &key_name, extract.into.span, "name it with `key = order_id`")),
            (_, _, _, None, _) => Err(syn::Error::new(model.struct_name.span, "the owner's primary key needs a Rust name")),
            (_, _, _, _, Some((name, at))) => Err(name_error("the column", &name, at, "rename it to an identifier: `column as new_name`")),
        }
    }

    pub(super) fn expand(&self, options: super::DeriveOptions) -> TokenStream {
        let stage = self.model.stage.value;
        let app = self.extract.sync_mode() == SyncMode::App;
        let asynchronous = options.async_variants;
        let mut out = self.new_table_probe();
        if stage >= Stage::ReadNew || (app && stage >= Stage::DualWrite) {
            out.extend(self.row_struct());
        }
        if stage >= Stage::ReadNew {
            out.extend(self.readers());
            if asynchronous {
                out.extend(self.readers_async());
            }
        }
        if stage >= Stage::WriteNew {
            out.extend(self.writers());
            if asynchronous {
                out.extend(self.writers_async());
            }
        }
        if app && stage >= Stage::DualWrite && stage < Stage::Contract {
            out.extend(self.app_wrappers());
            if asynchronous {
                out.extend(self.app_wrappers_async());
            }
        }
        out
    }

    fn key_type(&self) -> TokenStream {
        self.key_type.clone()
    }

    /// zmig's own error when the new table's `table!` cannot be found where the generated code
    /// looks for it, spanned on `into = …` and naming what to import; rustc's would suggest
    /// importing the wrong item.
    ///
    /// See [`super::table_probe`].
    fn new_table_probe(&self) -> TokenStream {
        let into = &self.into;
        let span = into.span();
        let scope = &self.new_table_scope;
        let owner = self.model.table();
        let (message, note) = if self.model.table_path.value.len() > 1 {
            let module =
                self.model.table_path.value[..self.model.table_path.value.len() - 1].join("::");
            (
                format!("no `table!` for the new table `{into}` in `{module}`, beside `{owner}`"),
                format!(
                    "help: the Rust generated at stage `{stage}` reads `{into}`; once the expand migration is applied, \
                     `diesel print-schema` writes its `table!` into `{module}` beside `{owner}`",
                    stage = self.model.stage.value,
                ),
            )
        } else {
            (
                format!("the new table `{into}` is not in scope: `into = {into}` needs its `table!` here, as `table_name = {owner}` needs `{owner}`'s"),
                format!(
                    "help: import it where `{owner}` comes from, e.g. `use crate::schema::{into};` beside `use crate::schema::{owner};`, \
                     or name the owner by its path, `#[diesel(table_name = crate::schema::{owner})]`, and zmig finds `{into}` beside it"
                ),
            )
        };
        super::table_probe(into, scope, span, &message, &note)
    }

    fn row_struct(&self) -> TokenStream {
        let vis = &self.input.vis;
        let row = &self.row;
        let new_table = &self.new_table;
        let key = &self.key;
        let key_type = self.key_type();
        let fields = self
            .targets
            .iter()
            .zip(&self.target_types)
            .map(|(field, ty)| quote!(pub #field: #ty,));
        let doc = format!(
            " A row of `{}`: the columns moved out of `{}` by zmig migration `{}`. Generated by `#[derive(Zmig)]` on `{}`.",
            self.extract.into.value,
            self.model.table(),
            self.model.migration_name(),
            self.input.ident
        );
        let key_doc = format!(" The `{}` row this row belongs to.", self.model.table());
        quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, PartialEq, ::diesel::Queryable, ::diesel::Selectable, ::diesel::Insertable, ::diesel::AsChangeset)]
            #[diesel(table_name = #new_table)]
            #[diesel(check_for_backend(::diesel::pg::Pg))]
            #[diesel(treat_none_as_null = true)]
            #vis struct #row {
                #[doc = #key_doc]
                pub #key: #key_type,
                #(#fields)*
            }
        }
    }

    fn readers(&self) -> TokenStream {
        let owner = &self.input.ident;
        let row = &self.row;
        let new_table = &self.new_table;
        let owner_table = &self.owner_table;
        let key = &self.key;
        let owner_pk = &self.owner_pk;
        let key_type = self.key_type();
        let find_with = format_ident!("find_with_{}", self.row_snake);
        let with = format_ident!("with_{}", self.row_snake);
        if let Some(pk) = &self.non_unique_pk {
            return quote! {
                #[automatically_derived]
                impl #row {
                    /// The rows of the owner whose key is `owner_key` (the owner key is not unique), by primary key.
                    pub fn find_for(conn: &mut ::diesel::pg::PgConnection, owner_key: #key_type) -> ::diesel::QueryResult<::std::vec::Vec<Self>> {
                        use ::diesel::prelude::*;
                        ::diesel::RunQueryDsl::load(#new_table::table.filter(#new_table::#key.eq(owner_key)).order(#new_table::#pk).select(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select()), conn)
                    }

                    /// The rows of these owners, by owner and primary key.
                    pub fn find_for_many(conn: &mut ::diesel::pg::PgConnection, owner_keys: &[#key_type]) -> ::diesel::QueryResult<::std::vec::Vec<Self>> {
                        use ::diesel::prelude::*;
                        ::diesel::RunQueryDsl::load(#new_table::table.filter(#new_table::#key.eq_any(owner_keys)).order((#new_table::#key, #new_table::#pk)).select(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select()), conn)
                    }
                }

                #[automatically_derived]
                impl #owner {
                    /// The owner whose key is `owner_key` with its rows in the new table.
                    pub fn #find_with(conn: &mut ::diesel::pg::PgConnection, owner_key: #key_type) -> ::diesel::QueryResult<::std::option::Option<(Self, ::std::vec::Vec<#row>)>> {
                        use ::diesel::prelude::*;
                        let owner = ::diesel::RunQueryDsl::first(#owner_table::table
                            .filter(#owner_table::#owner_pk.eq(owner_key.clone()))
                            .select(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select()), conn)
                            .optional()?;
                        match owner {
                            ::std::option::Option::Some(owner) => ::std::result::Result::Ok(::std::option::Option::Some((owner, #row::find_for(conn, owner_key)?))),
                            ::std::option::Option::None => ::std::result::Result::Ok(::std::option::Option::None),
                        }
                    }

                    /// `owners` (loaded by the caller) with their rows in the new table, in the same order.
                    pub fn #with(conn: &mut ::diesel::pg::PgConnection, owners: ::std::vec::Vec<Self>) -> ::diesel::QueryResult<::std::vec::Vec<(Self, ::std::vec::Vec<#row>)>> {
                        let keys: ::std::vec::Vec<#key_type> = owners.iter().map(|owner| owner.#owner_pk.clone()).collect();
                        let mut rows: ::std::collections::HashMap<#key_type, ::std::vec::Vec<#row>> = ::std::collections::HashMap::new();
                        for row in #row::find_for_many(conn, &keys)? {
                            rows.entry(row.#key.clone()).or_default().push(row);
                        }
                        ::std::result::Result::Ok(owners.into_iter().map(|owner| { let row = rows.remove(&owner.#owner_pk).unwrap_or_default(); (owner, row) }).collect())
                    }
                }
            };
        }
        quote! {
            #[automatically_derived]
            impl #row {
                /// The row of the owner whose key is `owner_key`, if it has one.
                pub fn find_for(conn: &mut ::diesel::pg::PgConnection, owner_key: #key_type) -> ::diesel::QueryResult<::std::option::Option<Self>> {
                    use ::diesel::prelude::*;
                    ::diesel::RunQueryDsl::first(#new_table::table.filter(#new_table::#key.eq(owner_key)).select(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select()), conn).optional()
                }

                /// The rows of these owners (of those that have one), in no particular order.
                pub fn find_for_many(conn: &mut ::diesel::pg::PgConnection, owner_keys: &[#key_type]) -> ::diesel::QueryResult<::std::vec::Vec<Self>> {
                    use ::diesel::prelude::*;
                    ::diesel::RunQueryDsl::load(#new_table::table.filter(#new_table::#key.eq_any(owner_keys)).select(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select()), conn)
                }
            }

            #[automatically_derived]
            impl #owner {
                /// The owner whose key is `owner_key` with its row in the new table, read in one query.
                pub fn #find_with(conn: &mut ::diesel::pg::PgConnection, owner_key: #key_type) -> ::diesel::QueryResult<::std::option::Option<(Self, ::std::option::Option<#row>)>> {
                    use ::diesel::prelude::*;
                    ::diesel::RunQueryDsl::first(#owner_table::table
                        .left_join(#new_table::table.on(#new_table::#key.eq(#owner_table::#owner_pk)))
                        .filter(#owner_table::#owner_pk.eq(owner_key))
                        .select((<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select(), <::std::option::Option<#row> as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select())), conn)
                        .optional()
                }

                /// `owners` (loaded by the caller) with their rows in the new table, in the same order.
                pub fn #with(conn: &mut ::diesel::pg::PgConnection, owners: ::std::vec::Vec<Self>) -> ::diesel::QueryResult<::std::vec::Vec<(Self, ::std::option::Option<#row>)>> {
                    let keys: ::std::vec::Vec<#key_type> = owners.iter().map(|owner| owner.#owner_pk.clone()).collect();
                    let mut rows: ::std::collections::HashMap<#key_type, #row> =
                        #row::find_for_many(conn, &keys)?.into_iter().map(|row| (row.#key.clone(), row)).collect();
                    ::std::result::Result::Ok(owners.into_iter().map(|owner| { let row = rows.remove(&owner.#owner_pk); (owner, row) }).collect())
                }
            }
        }
    }

    fn writers(&self) -> TokenStream {
        let owner = &self.input.ident;
        let row = &self.row;
        let new_table = &self.new_table;
        let key = &self.key;
        let owner_pk = &self.owner_pk;
        let key_type = self.key_type();
        let save_with = format_ident!("save_with_{}", self.row_snake);
        if let Some(pk) = &self.non_unique_pk {
            return quote! {
                #[automatically_derived]
                impl #row {
                    /// Updates the row with this primary key and owner, or inserts it. A row with
                    /// this primary key of another owner is never taken over: the insert then fails
                    /// with a unique violation.
                    pub fn save(&self, conn: &mut ::diesel::pg::PgConnection) -> ::diesel::QueryResult<Self> {
                        use ::diesel::prelude::*;
                        let updated = ::diesel::RunQueryDsl::get_result(::diesel::update(#new_table::table.filter(#new_table::#pk.eq(self.#pk.clone())).filter(#new_table::#key.eq(self.#key.clone())))
                            .set(self)
                            .returning(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_returning()), conn)
                            .optional()?;
                        match updated {
                            ::std::option::Option::Some(row) => ::std::result::Result::Ok(row),
                            ::std::option::Option::None => ::diesel::RunQueryDsl::get_result(::diesel::insert_into(#new_table::table)
                                .values(self)
                                .returning(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_returning()), conn),
                        }
                    }

                    /// Deletes every row of the owner `owner_key`; returns how many went.
                    pub fn delete_for(conn: &mut ::diesel::pg::PgConnection, owner_key: #key_type) -> ::diesel::QueryResult<usize> {
                        use ::diesel::prelude::*;
                        ::diesel::RunQueryDsl::execute(::diesel::delete(#new_table::table.filter(#new_table::#key.eq(owner_key))), conn)
                    }
                }
            };
        }
        quote! {
            #[automatically_derived]
            impl #row {
                /// Inserts this row, or replaces the row its owner has.
                pub fn save(&self, conn: &mut ::diesel::pg::PgConnection) -> ::diesel::QueryResult<Self> {
                    use ::diesel::prelude::*;
                    ::diesel::RunQueryDsl::get_result(::diesel::insert_into(#new_table::table)
                        .values(self)
                        .on_conflict(#new_table::#key)
                        .do_update()
                        .set(self)
                        .returning(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_returning()), conn)
                }

                /// Deletes the row of the owner `owner_key`; returns how many rows went (0 or 1).
                pub fn delete_for(conn: &mut ::diesel::pg::PgConnection, owner_key: #key_type) -> ::diesel::QueryResult<usize> {
                    use ::diesel::prelude::*;
                    ::diesel::RunQueryDsl::execute(::diesel::delete(#new_table::table.filter(#new_table::#key.eq(owner_key))), conn)
                }
            }

            #[automatically_derived]
            impl #owner {
                /// Writes an owner and then its row in the new table, in one transaction.
                /// `write_owner` inserts or updates the owner and returns it; `row` builds its new
                /// row from it (`None`: the owner has none, and any it had is deleted).
                pub fn #save_with(
                    conn: &mut ::diesel::pg::PgConnection,
                    write_owner: impl ::std::ops::FnOnce(&mut ::diesel::pg::PgConnection) -> ::diesel::QueryResult<Self>,
                    row: impl ::std::ops::FnOnce(&Self) -> ::std::option::Option<#row>,
                ) -> ::diesel::QueryResult<(Self, ::std::option::Option<#row>)> {
                    ::diesel::Connection::transaction(conn, |conn| {
                        let owner = write_owner(conn)?;
                        let saved = match row(&owner) {
                            ::std::option::Option::Some(row) => ::std::option::Option::Some(row.save(conn)?),
                            ::std::option::Option::None => {
                                #row::delete_for(conn, owner.#owner_pk.clone())?;
                                ::std::option::Option::None
                            }
                        };
                        ::std::result::Result::Ok((owner, saved))
                    })
                }
            }
        }
    }

    fn app_wrappers(&self) -> TokenStream {
        let owner = &self.input.ident;
        let owner_table = &self.owner_table;
        let owner_pk = &self.owner_pk;
        let key_type = self.key_type();
        let name = self.model.migration_name();
        quote! {
            #[automatically_derived]
            impl #owner {
                /// `sync = app`: inserts an owner with `insert` and brings its new row in step, in
                /// one transaction. Every insert of an owner must go through here.
                pub fn zmig_insert(
                    conn: &mut ::diesel::pg::PgConnection,
                    insert: impl ::std::ops::FnOnce(&mut ::diesel::pg::PgConnection) -> ::diesel::QueryResult<Self>,
                ) -> ::diesel::QueryResult<Self> {
                    ::diesel::Connection::transaction(conn, |conn| {
                        let owner = insert(conn)?;
                        ::zmig_runtime::sync_owner(conn, #name, i64::from(owner.#owner_pk.clone()))?;
                        ::std::result::Result::Ok(owner)
                    })
                }

                /// `sync = app`: runs `update` on the owner `owner_key` and brings its new row in
                /// step, in one transaction. Every update of an owner must go through here.
                pub fn zmig_update<T>(
                    conn: &mut ::diesel::pg::PgConnection,
                    owner_key: #key_type,
                    update: impl ::std::ops::FnOnce(&mut ::diesel::pg::PgConnection) -> ::diesel::QueryResult<T>,
                ) -> ::diesel::QueryResult<T> {
                    ::diesel::Connection::transaction(conn, |conn| {
                        let out = update(conn)?;
                        ::zmig_runtime::sync_owner(conn, #name, i64::from(owner_key))?;
                        ::std::result::Result::Ok(out)
                    })
                }

                /// `sync = app`: deletes the owner `owner_key` and its new row, in one
                /// transaction. Every delete of an owner must go through here: until write_new
                /// adds the foreign key, nothing else removes the new row.
                pub fn zmig_delete(conn: &mut ::diesel::pg::PgConnection, owner_key: #key_type) -> ::diesel::QueryResult<usize> {
                    use ::diesel::prelude::*;
                    ::diesel::Connection::transaction(conn, |conn| {
                        let deleted = ::diesel::RunQueryDsl::execute(::diesel::delete(#owner_table::table.filter(#owner_table::#owner_pk.eq(owner_key.clone()))), conn)?;
                        ::zmig_runtime::sync_owner(conn, #name, i64::from(owner_key))?;
                        ::std::result::Result::Ok(deleted)
                    })
                }
            }
        }
    }
}

/// The connection the `_async` variants take: diesel-async's, as zmig-runtime re-exports it (a
/// pooled connection derefs to it).
fn async_conn() -> TokenStream {
    quote!(::zmig_runtime::__private::diesel_async::AsyncPgConnection)
}

/// Diesel's query-builder traits, which diesel-async shares. Not `RunQueryDsl`: both crates have
/// one with the same method names, and an async service imports diesel-async's where its models
/// live, so the generated code (sync and async alike) calls `load`, `first`, `get_result` and
/// `execute` through the trait's path, never as methods that would be ambiguous there.
fn async_uses() -> TokenStream {
    quote! {
        #[allow(unused_imports)]
        use ::diesel::{ExpressionMethods as _, JoinOnDsl as _, OptionalExtension as _, QueryDsl as _};
    }
}

/// The `_async` twins of the readers, writers and `sync = app` wrappers (see
/// [`super::DeriveOptions::async_variants`] for why twins, and why so named): the same queries
/// and transactions over diesel-async. A callback that writes inside the wrapper's transaction
/// returns a [`ConnFuture`](https://docs.rs/zmig-runtime/latest/zmig_runtime/nonblocking/type.ConnFuture.html),
/// boxed and `Send`, borrowing the connection: what `AsyncConnection::transaction` can run and a
/// multi-threaded runtime can move.
impl RustSide<'_> {
    fn readers_async(&self) -> TokenStream {
        let owner = &self.input.ident;
        let row = &self.row;
        let new_table = &self.new_table;
        let owner_table = &self.owner_table;
        let key = &self.key;
        let owner_pk = &self.owner_pk;
        let key_type = self.key_type();
        let conn = async_conn();
        let uses = async_uses();
        let find_with = format_ident!("find_with_{}_async", self.row_snake);
        let with = format_ident!("with_{}_async", self.row_snake);
        if let Some(pk) = &self.non_unique_pk {
            return quote! {
                #[automatically_derived]
                impl #row {
                    /// `find_for`, awaited over diesel-async: the rows of the owner whose key is `owner_key`, by primary key.
                    pub async fn find_for_async(conn: &mut #conn, owner_key: #key_type) -> ::diesel::QueryResult<::std::vec::Vec<Self>> {
                        #uses
                        ::zmig_runtime::__private::diesel_async::RunQueryDsl::load(#new_table::table.filter(#new_table::#key.eq(owner_key)).order(#new_table::#pk).select(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select()), conn).await
                    }

                    /// `find_for_many`, awaited over diesel-async: the rows of these owners, by owner and primary key.
                    pub async fn find_for_many_async(conn: &mut #conn, owner_keys: &[#key_type]) -> ::diesel::QueryResult<::std::vec::Vec<Self>> {
                        #uses
                        ::zmig_runtime::__private::diesel_async::RunQueryDsl::load(#new_table::table.filter(#new_table::#key.eq_any(owner_keys)).order((#new_table::#key, #new_table::#pk)).select(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select()), conn).await
                    }
                }

                #[automatically_derived]
                impl #owner {
                    /// The owner whose key is `owner_key` with its rows in the new table, awaited over diesel-async.
                    pub async fn #find_with(conn: &mut #conn, owner_key: #key_type) -> ::diesel::QueryResult<::std::option::Option<(Self, ::std::vec::Vec<#row>)>> {
                        #uses
                        let owner = ::zmig_runtime::__private::diesel_async::RunQueryDsl::first(#owner_table::table
                            .filter(#owner_table::#owner_pk.eq(owner_key.clone()))
                            .select(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select()), conn)
                            .await
                            .optional()?;
                        match owner {
                            ::std::option::Option::Some(owner) => ::std::result::Result::Ok(::std::option::Option::Some((owner, #row::find_for_async(conn, owner_key).await?))),
                            ::std::option::Option::None => ::std::result::Result::Ok(::std::option::Option::None),
                        }
                    }

                    /// `owners` (loaded by the caller) with their rows in the new table, in the same order, awaited over diesel-async.
                    pub async fn #with(conn: &mut #conn, owners: ::std::vec::Vec<Self>) -> ::diesel::QueryResult<::std::vec::Vec<(Self, ::std::vec::Vec<#row>)>> {
                        let keys: ::std::vec::Vec<#key_type> = owners.iter().map(|owner| owner.#owner_pk.clone()).collect();
                        let mut rows: ::std::collections::HashMap<#key_type, ::std::vec::Vec<#row>> = ::std::collections::HashMap::new();
                        for row in #row::find_for_many_async(conn, &keys).await? {
                            rows.entry(row.#key.clone()).or_default().push(row);
                        }
                        ::std::result::Result::Ok(owners.into_iter().map(|owner| { let row = rows.remove(&owner.#owner_pk).unwrap_or_default(); (owner, row) }).collect())
                    }
                }
            };
        }
        quote! {
            #[automatically_derived]
            impl #row {
                /// `find_for`, awaited over diesel-async: the row of the owner whose key is `owner_key`, if it has one.
                pub async fn find_for_async(conn: &mut #conn, owner_key: #key_type) -> ::diesel::QueryResult<::std::option::Option<Self>> {
                    #uses
                    ::zmig_runtime::__private::diesel_async::RunQueryDsl::first(#new_table::table.filter(#new_table::#key.eq(owner_key)).select(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select()), conn).await.optional()
                }

                /// `find_for_many`, awaited over diesel-async: the rows of these owners (of those that have one), in no particular order.
                pub async fn find_for_many_async(conn: &mut #conn, owner_keys: &[#key_type]) -> ::diesel::QueryResult<::std::vec::Vec<Self>> {
                    #uses
                    ::zmig_runtime::__private::diesel_async::RunQueryDsl::load(#new_table::table.filter(#new_table::#key.eq_any(owner_keys)).select(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select()), conn).await
                }
            }

            #[automatically_derived]
            impl #owner {
                /// The owner whose key is `owner_key` with its row in the new table, read in one query, awaited over diesel-async.
                pub async fn #find_with(conn: &mut #conn, owner_key: #key_type) -> ::diesel::QueryResult<::std::option::Option<(Self, ::std::option::Option<#row>)>> {
                    #uses
                    ::zmig_runtime::__private::diesel_async::RunQueryDsl::first(#owner_table::table
                        .left_join(#new_table::table.on(#new_table::#key.eq(#owner_table::#owner_pk)))
                        .filter(#owner_table::#owner_pk.eq(owner_key))
                        .select((<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select(), <::std::option::Option<#row> as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_select())), conn)
                        .await
                        .optional()
                }

                /// `owners` (loaded by the caller) with their rows in the new table, in the same order, awaited over diesel-async.
                pub async fn #with(conn: &mut #conn, owners: ::std::vec::Vec<Self>) -> ::diesel::QueryResult<::std::vec::Vec<(Self, ::std::option::Option<#row>)>> {
                    let keys: ::std::vec::Vec<#key_type> = owners.iter().map(|owner| owner.#owner_pk.clone()).collect();
                    let mut rows: ::std::collections::HashMap<#key_type, #row> =
                        #row::find_for_many_async(conn, &keys).await?.into_iter().map(|row| (row.#key.clone(), row)).collect();
                    ::std::result::Result::Ok(owners.into_iter().map(|owner| { let row = rows.remove(&owner.#owner_pk); (owner, row) }).collect())
                }
            }
        }
    }

    fn writers_async(&self) -> TokenStream {
        let owner = &self.input.ident;
        let row = &self.row;
        let new_table = &self.new_table;
        let key = &self.key;
        let owner_pk = &self.owner_pk;
        let key_type = self.key_type();
        let conn = async_conn();
        let uses = async_uses();
        let save_with = format_ident!("save_with_{}_async", self.row_snake);
        if let Some(pk) = &self.non_unique_pk {
            return quote! {
                #[automatically_derived]
                impl #row {
                    /// `save`, awaited over diesel-async: updates the row with this primary key and
                    /// owner, or inserts it. A row with this primary key of another owner is never
                    /// taken over: the insert then fails with a unique violation.
                    pub async fn save_async(&self, conn: &mut #conn) -> ::diesel::QueryResult<Self> {
                        #uses
                        let updated = ::zmig_runtime::__private::diesel_async::RunQueryDsl::get_result(::diesel::update(#new_table::table.filter(#new_table::#pk.eq(self.#pk.clone())).filter(#new_table::#key.eq(self.#key.clone())))
                            .set(self)
                            .returning(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_returning()), conn)
                            .await
                            .optional()?;
                        match updated {
                            ::std::option::Option::Some(row) => ::std::result::Result::Ok(row),
                            ::std::option::Option::None => ::zmig_runtime::__private::diesel_async::RunQueryDsl::get_result(::diesel::insert_into(#new_table::table)
                                .values(self)
                                .returning(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_returning()), conn)
                                .await,
                        }
                    }

                    /// `delete_for`, awaited over diesel-async: deletes every row of the owner `owner_key`; returns how many went.
                    pub async fn delete_for_async(conn: &mut #conn, owner_key: #key_type) -> ::diesel::QueryResult<usize> {
                        #uses
                        ::zmig_runtime::__private::diesel_async::RunQueryDsl::execute(::diesel::delete(#new_table::table.filter(#new_table::#key.eq(owner_key))), conn).await
                    }
                }
            };
        }
        quote! {
            #[automatically_derived]
            impl #row {
                /// `save`, awaited over diesel-async: inserts this row, or replaces the row its owner has.
                pub async fn save_async(&self, conn: &mut #conn) -> ::diesel::QueryResult<Self> {
                    #uses
                    ::zmig_runtime::__private::diesel_async::RunQueryDsl::get_result(::diesel::insert_into(#new_table::table)
                        .values(self)
                        .on_conflict(#new_table::#key)
                        .do_update()
                        .set(self)
                        .returning(<Self as ::diesel::SelectableHelper<::diesel::pg::Pg>>::as_returning()), conn)
                        .await
                }

                /// `delete_for`, awaited over diesel-async: deletes the row of the owner `owner_key`; returns how many rows went (0 or 1).
                pub async fn delete_for_async(conn: &mut #conn, owner_key: #key_type) -> ::diesel::QueryResult<usize> {
                    #uses
                    ::zmig_runtime::__private::diesel_async::RunQueryDsl::execute(::diesel::delete(#new_table::table.filter(#new_table::#key.eq(owner_key))), conn).await
                }
            }

            #[automatically_derived]
            impl #owner {
                /// Writes an owner and then its row in the new table, in one transaction, awaited
                /// over diesel-async. `write_owner` inserts or updates the owner and returns it
                /// (`|conn| Box::pin(async move { … })`); `row` builds its new row from it
                /// (`None`: the owner has none, and any it had is deleted).
                pub async fn #save_with(
                    conn: &mut #conn,
                    write_owner: impl for<'c> ::std::ops::FnOnce(&'c mut #conn) -> ::zmig_runtime::nonblocking::ConnFuture<'c, Self> + ::std::marker::Send,
                    row: impl ::std::ops::FnOnce(&Self) -> ::std::option::Option<#row> + ::std::marker::Send,
                ) -> ::diesel::QueryResult<(Self, ::std::option::Option<#row>)> {
                    ::zmig_runtime::__private::diesel_async::AsyncConnection::transaction(conn, async move |conn: &mut #conn| {
                        let owner = write_owner(conn).await?;
                        let saved = match row(&owner) {
                            ::std::option::Option::Some(row) => ::std::option::Option::Some(row.save_async(conn).await?),
                            ::std::option::Option::None => {
                                #row::delete_for_async(conn, owner.#owner_pk.clone()).await?;
                                ::std::option::Option::None
                            }
                        };
                        ::std::result::Result::Ok((owner, saved))
                    })
                    .await
                }
            }
        }
    }

    fn app_wrappers_async(&self) -> TokenStream {
        let owner = &self.input.ident;
        let owner_table = &self.owner_table;
        let owner_pk = &self.owner_pk;
        let key_type = self.key_type();
        let name = self.model.migration_name();
        let conn = async_conn();
        let uses = async_uses();
        quote! {
            #[automatically_derived]
            impl #owner {
                /// `sync = app`, awaited over diesel-async: inserts an owner with `insert`
                /// (`|conn| Box::pin(async move { … })`) and brings its new row in step, in one
                /// transaction. Every insert of an owner must go through here (or `zmig_insert`).
                pub async fn zmig_insert_async(
                    conn: &mut #conn,
                    insert: impl for<'c> ::std::ops::FnOnce(&'c mut #conn) -> ::zmig_runtime::nonblocking::ConnFuture<'c, Self> + ::std::marker::Send,
                ) -> ::diesel::QueryResult<Self> {
                    ::zmig_runtime::__private::diesel_async::AsyncConnection::transaction(conn, async move |conn: &mut #conn| {
                        let owner = insert(conn).await?;
                        ::zmig_runtime::nonblocking::sync_owner(conn, #name, i64::from(owner.#owner_pk.clone())).await?;
                        ::std::result::Result::Ok(owner)
                    })
                    .await
                }

                /// `sync = app`, awaited over diesel-async: runs `update` on the owner
                /// `owner_key` and brings its new row in step, in one transaction. Every update
                /// of an owner must go through here (or `zmig_update`).
                pub async fn zmig_update_async<T: ::std::marker::Send>(
                    conn: &mut #conn,
                    owner_key: #key_type,
                    update: impl for<'c> ::std::ops::FnOnce(&'c mut #conn) -> ::zmig_runtime::nonblocking::ConnFuture<'c, T> + ::std::marker::Send,
                ) -> ::diesel::QueryResult<T> {
                    ::zmig_runtime::__private::diesel_async::AsyncConnection::transaction(conn, async move |conn: &mut #conn| {
                        let out = update(conn).await?;
                        ::zmig_runtime::nonblocking::sync_owner(conn, #name, i64::from(owner_key)).await?;
                        ::std::result::Result::Ok(out)
                    })
                    .await
                }

                /// `sync = app`, awaited over diesel-async: deletes the owner `owner_key` and its
                /// new row, in one transaction. Every delete of an owner must go through here (or
                /// `zmig_delete`): until write_new adds the foreign key, nothing else removes the
                /// new row.
                pub async fn zmig_delete_async(conn: &mut #conn, owner_key: #key_type) -> ::diesel::QueryResult<usize> {
                    ::zmig_runtime::__private::diesel_async::AsyncConnection::transaction(conn, async move |conn: &mut #conn| {
                        #uses
                        let deleted = ::zmig_runtime::__private::diesel_async::RunQueryDsl::execute(::diesel::delete(#owner_table::table.filter(#owner_table::#owner_pk.eq(owner_key.clone()))), conn).await?;
                        ::zmig_runtime::nonblocking::sync_owner(conn, #name, i64::from(owner_key)).await?;
                        ::std::result::Result::Ok(deleted)
                    })
                    .await
                }
            }
        }
    }
}

/// The model's field types by the column they map to (`#[diesel(column_name)]` or their name).
fn model_field_types(input: &syn::DeriveInput) -> HashMap<String, &syn::Type> {
    let syn::Data::Struct(data) = &input.data else {
        return HashMap::new();
    };
    data.fields
        .iter()
        .filter_map(|field| Some((field_column(field)?, &field.ty)))
        .collect()
}

/// `StreetAddress` → `street_address`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}
