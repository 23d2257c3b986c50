//! Reading `schema.rs` as `diesel print-schema` (Diesel 2.3) writes it.
//!
//! The file is parsed as Rust with `syn`, then the bodies of the Diesel macros are parsed with
//! the `Parse` impls below. Every error keeps the span of the token that is wrong, so the user
//! gets `schema.rs:LINE:COLUMN: message` instead of a guess.

use std::collections::HashMap;
use std::path::Path;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{braced, parenthesized, token, Attribute, Expr, Ident, Item, Lit, Meta, Token};

use super::types::range_type_name;
use super::{Column, CustomType, Joinable, Schema, SchemaError, SqlType, Table};

/// What a column line looks like; the message for anything in a table body that is not one.
const COLUMN_SYNTAX: &str = "expected `column_name -> SqlType,` in table! body";
/// What a table declaration looks like; the message for anything in `table!` that is not one.
const TABLE_SYNTAX: &str =
    "expected a table declaration `table_name (primary_key) { column_name -> SqlType, … }` in table! body";
/// What a `joinable!` invocation looks like.
const JOINABLE_SYNTAX: &str = "expected `child_table -> parent_table (foreign_key)` in joinable!";

/// Reads the `schema.rs` at `file` (used only for error messages) whose text is `source`.
pub fn parse_schema(file: &Path, source: &str) -> Result<Schema, SchemaError> {
    let to_schema_error = |err: syn::Error| schema_error(file, &err);
    let tokens = tokenize(source).map_err(to_schema_error)?;
    let ast: syn::File = syn::parse2(tokens).map_err(to_schema_error)?;
    let mut schema = Schema {
        file: file.to_path_buf(),
        ..Schema::default()
    };
    collect_items(&ast.items, &mut schema).map_err(to_schema_error)?;
    Ok(schema)
}

/// Splits the file into tokens. Done apart from `syn` because a lexing failure there only
/// says "cannot parse string into token stream"; here it gets a message a user can act on.
fn tokenize(source: &str) -> syn::Result<TokenStream> {
    // An editor's byte-order mark is not Rust, but rustc accepts it.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    source.parse().map_err(|err: proc_macro2::LexError| {
        syn::Error::new(
            err.span(),
            "not valid Rust: unbalanced delimiter, unterminated literal or stray character",
        )
    })
}

/// A `syn` error as a `SchemaError` pointing at the start of the offending token.
fn schema_error(file: &Path, err: &syn::Error) -> SchemaError {
    let start = err.span().start();
    SchemaError {
        file: file.to_path_buf(),
        // proc-macro2 lines are already 1-based; `max` guards spans without a location.
        line: start.line.max(1),
        // proc-macro2 columns are 0-based, editors and compilers count from 1.
        column: start.column + 1,
        message: err.to_string(),
    }
}

/// Walks the items of a file or inline module. Modules other than `sql_types` are entered
/// because `print-schema --schema other` wraps its output in `pub mod other { … }`.
fn collect_items(items: &[Item], schema: &mut Schema) -> syn::Result<()> {
    for item in items {
        match item {
            Item::Macro(item) => collect_macro(&item.mac, schema)?,
            Item::Mod(module) => {
                if let Some((_, content)) = &module.content {
                    if module.ident == "sql_types" {
                        collect_custom_types(content, schema)?;
                    } else {
                        collect_items(content, schema)?;
                    }
                }
            }
            // `use`s, the `@generated` comment and anything else carry no schema information.
            _ => {}
        }
    }
    Ok(())
}

/// Dispatches on the macro's last path segment, so `diesel::table!` and `table!` both count.
fn collect_macro(mac: &syn::Macro, schema: &mut Schema) -> syn::Result<()> {
    let Some(name) = mac.path.segments.last().map(|segment| &segment.ident) else {
        return Ok(());
    };
    if name == "table" {
        for parsed in mac.parse_body::<TableMacro>()?.tables {
            add_table(schema, parsed)?;
        }
    } else if name == "joinable" {
        schema.joinables.push(mac.parse_body::<JoinableMacro>()?.0);
    }
    // `allow_tables_to_appear_in_same_query!` and other macros say nothing zmig needs.
    Ok(())
}

/// Appends a table, refusing a second table with the same Rust name: lookups are by that name.
fn add_table(schema: &mut Schema, parsed: ParsedTable) -> syn::Result<()> {
    if let Some(first) = schema.table(&parsed.table.rust_name) {
        return Err(syn::Error::new(
            parsed.name_span,
            format!(
                "duplicate table `{}` (first declared on line {})",
                parsed.table.rust_name, first.line
            ),
        ));
    }
    schema.tables.push(parsed.table);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// `table! { … }`
// ---------------------------------------------------------------------------------------------

/// The body of one `table!` invocation: `use` lines, then one or more table declarations.
struct TableMacro {
    tables: Vec<ParsedTable>,
}

/// A table plus the span of its name, kept for errors found after parsing (duplicates).
struct ParsedTable {
    table: Table,
    name_span: Span,
}

impl Parse for TableMacro {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut tables = Vec::new();
        while !input.is_empty() {
            let attrs = input.call(Attribute::parse_outer)?;
            if input.peek(Token![use]) {
                // `use diesel::sql_types::*;` and friends only bring type names into scope.
                input.parse::<syn::ItemUse>()?;
                continue;
            }
            tables.push(parse_table(input, &attrs)?);
        }
        if tables.is_empty() {
            return Err(input.error(TABLE_SYNTAX));
        }
        Ok(TableMacro { tables })
    }
}

/// `[schema.]name [(pk, …)] { columns }`, with `attrs` already read in front of it.
fn parse_table(input: ParseStream, attrs: &[Attribute]) -> syn::Result<ParsedTable> {
    let first = parse_name(input, TABLE_SYNTAX)?;
    let (pg_schema, name) = if input.peek(Token![.]) {
        input.parse::<Token![.]>()?;
        let name = parse_name(input, "expected a table name after `schema.`")?;
        (Some(first.unraw().to_string()), name)
    } else {
        (None, first)
    };
    let rust_name = name.unraw().to_string();

    // Diesel's default primary key when the parenthesised list is left out.
    let mut primary_key = vec![(String::from("id"), name.span())];
    if input.peek(token::Paren) {
        primary_key = parse_primary_key(input)?;
    }

    if !input.peek(token::Brace) {
        let expected =
            format!("expected `{{ column_name -> SqlType, … }}` after table `{rust_name}`");
        return Err(input.error(expected));
    }
    let body;
    braced!(body in input);
    let columns = parse_columns(&body)?;
    check_primary_key(&rust_name, &primary_key, &columns)?;

    let attrs = read_attrs(attrs)?;
    let table = Table {
        sql_name: attrs.sql_name.unwrap_or_else(|| rust_name.clone()),
        rust_name,
        pg_schema,
        primary_key: primary_key.into_iter().map(|(column, _)| column).collect(),
        columns,
        doc: attrs.doc,
        line: name.span().start().line,
    };
    Ok(ParsedTable {
        table,
        name_span: name.span(),
    })
}

/// `(a, b)`: the primary-key column names with their spans, for the existence check.
fn parse_primary_key(input: ParseStream) -> syn::Result<Vec<(String, Span)>> {
    let content;
    let parens = parenthesized!(content in input);
    let names = Punctuated::<Ident, Token![,]>::parse_terminated_with(&content, |input| {
        parse_name(input, "expected a primary-key column name")
    })?;
    if names.is_empty() {
        return Err(syn::Error::new(
            parens.span.join(),
            "expected at least one primary-key column in `( … )`",
        ));
    }
    Ok(names
        .iter()
        .map(|name| (name.unraw().to_string(), name.span()))
        .collect())
}

/// Every primary-key column must be a column of the table, as Diesel itself requires.
fn check_primary_key(
    table: &str,
    primary_key: &[(String, Span)],
    columns: &[Column],
) -> syn::Result<()> {
    for (key, span) in primary_key {
        if !columns.iter().any(|column| &column.rust_name == key) {
            return Err(syn::Error::new(
                *span,
                format!("primary-key column `{key}` is not a column of table `{table}`"),
            ));
        }
    }
    Ok(())
}

/// The column lines inside a table's braces, refusing a column name used twice.
fn parse_columns(input: ParseStream) -> syn::Result<Vec<Column>> {
    let mut columns: Vec<Column> = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    while !input.is_empty() {
        let (column, span) = parse_column(input)?;
        if let Some(line) = first_line.get(&column.rust_name) {
            return Err(syn::Error::new(
                span,
                format!(
                    "duplicate column `{}` (first declared on line {line})",
                    column.rust_name
                ),
            ));
        }
        first_line.insert(column.rust_name.clone(), column.line);
        columns.push(column);
    }
    Ok(columns)
}

/// `#[attrs] name -> Type,` (the comma may be left out on the last line). Returns the span of
/// the name too, for the duplicate check.
fn parse_column(input: ParseStream) -> syn::Result<(Column, Span)> {
    let attrs = input.call(Attribute::parse_outer)?;
    let name = parse_name(input, COLUMN_SYNTAX)?;
    let rust_name = name.unraw().to_string();

    if !input.peek(Token![->]) {
        return Err(input.error(format!(
            "expected `->` after column name `{rust_name}` (`column_name -> SqlType,`)"
        )));
    }
    input.parse::<Token![->]>()?;

    let written: syn::Type = input.parse().map_err(|err| {
        // syn's own message lists every Rust type syntax; only the position is worth keeping.
        syn::Error::new(
            err.span(),
            format!("expected a Diesel SQL type such as `Int4` or `Nullable<Text>` after `{rust_name} ->`"),
        )
    })?;
    let (ty, nullable) = column_type(&written)?;

    if !input.is_empty() && !input.peek(Token![,]) {
        return Err(input.error(format!(
            "expected `,` after the type of column `{rust_name}`"
        )));
    }
    if input.peek(Token![,]) {
        input.parse::<Token![,]>()?;
    }

    let attrs = read_attrs(&attrs)?;
    let column = Column {
        sql_name: attrs.sql_name.unwrap_or_else(|| rust_name.clone()),
        rust_name,
        ty,
        nullable,
        max_length: attrs.max_length,
        doc: attrs.doc,
        line: name.span().start().line,
        exact: None,
    };
    Ok((column, name.span()))
}

/// An identifier (raw ones included); anything else, keywords too, fails with `expected`.
fn parse_name(input: ParseStream, expected: &str) -> syn::Result<Ident> {
    if input.peek(Ident) {
        input.parse()
    } else {
        Err(input.error(expected))
    }
}

// ---------------------------------------------------------------------------------------------
// SQL types as written in a column line
// ---------------------------------------------------------------------------------------------

/// The column's type with one outer `Nullable<…>` peeled off, and whether it was there.
fn column_type(written: &syn::Type) -> syn::Result<(SqlType, bool)> {
    match strip_nullable(written)? {
        Some(inner) => Ok((sql_type(inner)?, true)),
        None => Ok((sql_type(written)?, false)),
    }
}

/// `Some(T)` for `Nullable<T>`, `None` for any other type.
fn strip_nullable(written: &syn::Type) -> syn::Result<Option<&syn::Type>> {
    let (name, args) = type_head(written)?;
    if name == "Nullable" {
        Ok(Some(single_type_arg(written, &name, args)?))
    } else {
        Ok(None)
    }
}

/// A type below the outer `Nullable`: a name, `Array<T>`, or `Range<T>` (stored as Diesel's
/// alias, `Int4range` for `Range<Int4>`, so there is one spelling per PostgreSQL type).
fn sql_type(written: &syn::Type) -> syn::Result<SqlType> {
    let (name, args) = type_head(written)?;
    match name.as_str() {
        "Array" => {
            let element = single_type_arg(written, &name, args)?;
            // `Array<Nullable<T>>` is still `t[]`: PostgreSQL arrays always allow NULL elements.
            let element = strip_nullable(element)?.unwrap_or(element);
            Ok(SqlType::Array(Box::new(sql_type(element)?)))
        }
        "Range" | "Multirange" => {
            let element = single_type_arg(written, &name, args)?;
            let alias = match sql_type(element)? {
                SqlType::Named(element_name) => range_type_name(&name, &element_name),
                SqlType::Array(_) => None,
            };
            match alias {
                Some(alias) => Ok(SqlType::Named(alias.to_string())),
                None => Err(syn::Error::new_spanned(
                    element,
                    format!("PostgreSQL has no built-in {name} of this type"),
                )),
            }
        }
        "Nullable" => Err(syn::Error::new_spanned(
            written,
            "`Nullable<…>` is only allowed around the whole column type or an array element",
        )),
        _ if args.is_some() => Err(syn::Error::new_spanned(
            written,
            format!("unexpected type arguments on SQL type `{name}`"),
        )),
        _ => Ok(SqlType::Named(name)),
    }
}

/// The last path segment of a type (`Int4` in `diesel::sql_types::Int4`) and its `<…>` if any.
fn type_head(
    written: &syn::Type,
) -> syn::Result<(String, Option<&syn::AngleBracketedGenericArguments>)> {
    let syn::Type::Path(path) = written else {
        return Err(syn::Error::new_spanned(
            written,
            "expected a Diesel SQL type such as `Int4` or `Nullable<Text>`",
        ));
    };
    let last = match (&path.qself, path.path.segments.last()) {
        (None, Some(last)) => last,
        _ => {
            return Err(syn::Error::new_spanned(
                written,
                "expected a Diesel SQL type such as `Int4` or `Nullable<Text>`",
            ))
        }
    };
    // Only the last segment may have arguments: `a::b<T>::C` is not a type print-schema writes.
    for segment in path.path.segments.iter().rev().skip(1) {
        if !segment.arguments.is_none() {
            return Err(syn::Error::new_spanned(
                segment,
                "unexpected type arguments in SQL type path",
            ));
        }
    }
    match &last.arguments {
        syn::PathArguments::None => Ok((last.ident.unraw().to_string(), None)),
        syn::PathArguments::AngleBracketed(args) => {
            Ok((last.ident.unraw().to_string(), Some(args)))
        }
        syn::PathArguments::Parenthesized(args) => Err(syn::Error::new_spanned(
            args,
            "expected `<…>` type arguments",
        )),
    }
}

/// The `T` of `Wrapper<T>`; exactly one type argument is allowed.
fn single_type_arg<'a>(
    written: &'a syn::Type,
    name: &str,
    args: Option<&'a syn::AngleBracketedGenericArguments>,
) -> syn::Result<&'a syn::Type> {
    let mut types = args.into_iter().flat_map(|args| args.args.iter());
    match (types.next(), types.next()) {
        (Some(syn::GenericArgument::Type(inner)), None) => Ok(inner),
        _ => Err(syn::Error::new_spanned(
            written,
            format!("expected `{name}<SqlType>` with exactly one type argument"),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Attributes on tables and columns
// ---------------------------------------------------------------------------------------------

/// What zmig reads from the attributes in front of a table or a column.
#[derive(Default)]
struct SchemaAttrs {
    doc: Option<String>,
    sql_name: Option<String>,
    max_length: Option<u32>,
}

/// Reads `///` docs, `#[sql_name = "…"]` and `#[max_length = N]`. Other attributes are
/// passed through by Diesel to its generated code and mean nothing to zmig, so they are skipped.
fn read_attrs(attrs: &[Attribute]) -> syn::Result<SchemaAttrs> {
    let mut read = SchemaAttrs::default();
    let mut doc_lines = Vec::new();
    for attr in attrs {
        let Meta::NameValue(pair) = &attr.meta else {
            continue;
        };
        if pair.path.is_ident("doc") {
            // `#[doc = concat!(…)]` and the like are not comments print-schema writes; skip them.
            if let Expr::Lit(syn::ExprLit {
                lit: Lit::Str(text),
                ..
            }) = &pair.value
            {
                doc_lines.push(doc_line(&text.value()));
            }
        } else if pair.path.is_ident("sql_name") {
            read.sql_name = Some(string_value(&pair.value, "#[sql_name = \"…\"]")?);
        } else if pair.path.is_ident("max_length") {
            read.max_length = Some(max_length_value(&pair.value)?);
        }
    }
    if !doc_lines.is_empty() {
        read.doc = Some(doc_lines.join("\n"));
    }
    Ok(read)
}

/// `/// text` arrives as `" text"`: drop the one space that follows the slashes.
fn doc_line(raw: &str) -> String {
    raw.strip_prefix(' ').unwrap_or(raw).to_string()
}

/// The text of a string literal; `form` shows the expected attribute in the error.
fn string_value(value: &Expr, form: &str) -> syn::Result<String> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(text),
            ..
        }) => Ok(text.value()),
        _ => Err(syn::Error::new_spanned(
            value,
            format!("expected a string literal: `{form}`"),
        )),
    }
}

fn max_length_value(value: &Expr) -> syn::Result<u32> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(number),
            ..
        }) => number.base10_parse(),
        _ => Err(syn::Error::new_spanned(
            value,
            "expected an integer: `#[max_length = N]`",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// `joinable!(child -> parent (fk));`
// ---------------------------------------------------------------------------------------------

struct JoinableMacro(Joinable);

impl Parse for JoinableMacro {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let child = parse_name(input, JOINABLE_SYNTAX)?;
        if !input.peek(Token![->]) {
            return Err(input.error(JOINABLE_SYNTAX));
        }
        input.parse::<Token![->]>()?;
        let parent = parse_name(input, JOINABLE_SYNTAX)?;
        if !input.peek(token::Paren) {
            return Err(input.error(JOINABLE_SYNTAX));
        }
        let content;
        parenthesized!(content in input);
        let foreign_key = parse_name(&content, JOINABLE_SYNTAX)?;
        if !content.is_empty() {
            return Err(content.error(JOINABLE_SYNTAX));
        }
        if !input.is_empty() {
            return Err(input.error(JOINABLE_SYNTAX));
        }
        Ok(JoinableMacro(Joinable {
            child: child.unraw().to_string(),
            parent: parent.unraw().to_string(),
            foreign_key: foreign_key.unraw().to_string(),
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// `pub mod sql_types { … }`
// ---------------------------------------------------------------------------------------------

/// Every struct in `sql_types` that names a PostgreSQL type becomes a `CustomType`.
fn collect_custom_types(items: &[Item], schema: &mut Schema) -> syn::Result<()> {
    for item in items {
        if let Item::Struct(item) = item {
            if let Some(custom) = custom_type(item)? {
                schema.custom_types.push(custom);
            }
        }
    }
    Ok(())
}

/// Reads `#[diesel(postgres_type(name = "…", schema = "…"))]`; `None` for structs without one.
fn custom_type(item: &syn::ItemStruct) -> syn::Result<Option<CustomType>> {
    for attr in item
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("diesel"))
    {
        let metas = attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)?;
        for meta in &metas {
            if let Meta::List(list) = meta {
                if list.path.is_ident("postgres_type") {
                    let (pg_name, pg_schema) = postgres_type_names(list)?;
                    return Ok(Some(CustomType {
                        rust_name: item.ident.unraw().to_string(),
                        pg_name,
                        pg_schema,
                    }));
                }
            }
        }
    }
    Ok(None)
}

/// The `name` and optional `schema` of `postgres_type(…)`. The `oid = …` form is refused:
/// without a name zmig cannot write the type in SQL.
fn postgres_type_names(list: &syn::MetaList) -> syn::Result<(String, Option<String>)> {
    let pairs =
        list.parse_args_with(Punctuated::<syn::MetaNameValue, Token![,]>::parse_terminated)?;
    let mut name = None;
    let mut schema = None;
    for pair in &pairs {
        if pair.path.is_ident("name") {
            name = Some(string_value(&pair.value, "postgres_type(name = \"…\")")?);
        } else if pair.path.is_ident("schema") {
            schema = Some(string_value(&pair.value, "postgres_type(schema = \"…\")")?);
        }
    }
    match name {
        Some(name) => Ok((name, schema)),
        None => Err(syn::Error::new_spanned(
            list,
            "expected `postgres_type(name = \"…\")`: zmig needs the PostgreSQL name of the type",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `diesel print-schema` writes, plus the hand-written forms Diesel also accepts.
    const PRINTED: &str = r#"// @generated automatically by Diesel CLI.

pub mod sql_types {
    #[derive(diesel::query_builder::QueryId, Clone, diesel::sql_types::SqlType)]
    #[diesel(postgres_type(name = "mood"))]
    pub struct Mood;

    #[derive(diesel::query_builder::QueryId, Clone, diesel::sql_types::SqlType)]
    #[diesel(postgres_type(name = "order_state", schema = "app"))]
    pub struct OrderState;

    /// Not a custom type: no `postgres_type`.
    pub struct Helper;
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::Mood;

    /// Representation of the `users` table.
    ///
    /// (Automatically generated by Diesel.)
    users (id) {
        /// The `id` column of the `users` table.
        ///
        /// Its SQL type is `Int4`.
        id -> Int4,
        #[max_length = 255]
        email -> Varchar,
        nickname -> Nullable<Text>,
        tags -> Array<Nullable<Int4>>,
        aliases -> Nullable<Array<Text>>,
        mood -> Mood,
        #[sql_name = "Created At"]
        created_at -> diesel::sql_types::Timestamptz,
        r#type -> Text,
        during -> Range<Int8>
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::OrderState;

    #[sql_name = "Order Lines"]
    app.order_lines (order_id, line_no) {
        order_id -> Int8,
        line_no -> Int2,
        state -> super::sql_types::OrderState,
        user_id -> Nullable<Int4>,
    }
}

table! {
    settings {
        id -> Integer,
        value -> sql_types::Mood
    }
}

diesel::joinable!(order_lines -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(order_lines, settings, users,);
"#;

    fn parse(source: &str) -> Result<Schema, SchemaError> {
        parse_schema(Path::new("src/schema.rs"), source)
    }

    fn named(name: &str) -> SqlType {
        SqlType::Named(name.to_string())
    }

    /// The error as it would be printed, `file:line:column: message`.
    fn error(source: &str) -> String {
        parse(source)
            .expect_err("schema should be refused")
            .to_string()
    }

    #[test]
    fn reads_print_schema_output() {
        let schema = parse(PRINTED).unwrap();
        assert_eq!(schema.file, Path::new("src/schema.rs"));
        let names: Vec<_> = schema.tables.iter().map(|t| t.rust_name.as_str()).collect();
        assert_eq!(names, ["users", "order_lines", "settings"]);

        assert_eq!(
            schema.custom_types,
            [
                CustomType {
                    rust_name: "Mood".into(),
                    pg_name: "mood".into(),
                    pg_schema: None,
                },
                CustomType {
                    rust_name: "OrderState".into(),
                    pg_name: "order_state".into(),
                    pg_schema: Some("app".into()),
                },
            ]
        );
        assert_eq!(
            schema.joinables,
            [Joinable {
                child: "order_lines".into(),
                parent: "users".into(),
                foreign_key: "user_id".into(),
            }]
        );
    }

    #[test]
    fn reads_table_header_and_docs() {
        let schema = parse(PRINTED).unwrap();
        let users = schema.table("users").unwrap();
        assert_eq!(users.sql_name, "users");
        assert_eq!(users.pg_schema, None);
        assert_eq!(users.primary_key, ["id"]);
        assert_eq!(
            users.doc.as_deref(),
            Some("Representation of the `users` table.\n\n(Automatically generated by Diesel.)")
        );
        assert_eq!(users.line, 23);

        let lines = schema.table("order_lines").unwrap();
        assert_eq!(lines.sql_name, "Order Lines");
        assert_eq!(lines.pg_schema.as_deref(), Some("app"));
        assert_eq!(lines.primary_key, ["order_id", "line_no"]);
        assert_eq!(lines.doc, None);
        assert_eq!(lines.line, 46);

        // No `(…)`: Diesel's default primary key.
        assert_eq!(schema.table("settings").unwrap().primary_key, ["id"]);
    }

    #[test]
    fn reads_columns() {
        let schema = parse(PRINTED).unwrap();
        let users = schema.table("users").unwrap();

        let id = users.column("id").unwrap();
        assert_eq!(
            (id.ty.clone(), id.nullable, id.line),
            (named("Int4"), false, 27)
        );
        assert_eq!(
            id.doc.as_deref(),
            Some("The `id` column of the `users` table.\n\nIts SQL type is `Int4`.")
        );

        let email = users.column("email").unwrap();
        assert_eq!(
            (email.ty.clone(), email.max_length, email.line),
            (named("Varchar"), Some(255), 29)
        );
        assert_eq!(email.doc, None);

        let nickname = users.column("nickname").unwrap();
        assert_eq!(
            (nickname.ty.clone(), nickname.nullable),
            (named("Text"), true)
        );

        let tags = users.column("tags").unwrap();
        assert_eq!(tags.ty, SqlType::Array(Box::new(named("Int4"))));
        assert!(!tags.nullable);

        let aliases = users.column("aliases").unwrap();
        assert_eq!(aliases.ty, SqlType::Array(Box::new(named("Text"))));
        assert!(aliases.nullable);

        assert_eq!(users.column("mood").unwrap().ty, named("Mood"));

        let created = users.column("created_at").unwrap();
        assert_eq!(
            (created.sql_name.as_str(), &created.ty),
            ("Created At", &named("Timestamptz"))
        );

        let kind = users.column("type").unwrap();
        assert_eq!((kind.sql_name.as_str(), &kind.ty), ("type", &named("Text")));

        assert_eq!(users.column("during").unwrap().ty, named("Int8range"));

        let lines = schema.table("order_lines").unwrap();
        assert_eq!(lines.column("state").unwrap().ty, named("OrderState"));
        assert!(lines.column("user_id").unwrap().nullable);
        assert_eq!(
            schema
                .table("settings")
                .unwrap()
                .column("value")
                .unwrap()
                .ty,
            named("Mood")
        );
    }

    #[test]
    fn reads_several_tables_in_one_invocation_and_nested_modules() {
        let schema = parse(
            "pub mod app {\n\
             diesel::table! {\n\
                 use diesel::sql_types::*;\n\
                 app.a (id) { id -> Int4, }\n\
                 use diesel::sql_types::*;\n\
                 app.b (id) { id -> Int4 }\n\
             }\n\
             }\n",
        )
        .unwrap();
        let names: Vec<_> = schema.tables.iter().map(|t| t.rust_name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(schema.tables[1].line, 6);
    }

    #[test]
    fn ignores_unrelated_items() {
        let schema =
            parse("use std::fmt;\nfn helper() {}\nmacro_rules! m { () => {} }\nfoo!(bar);\n")
                .unwrap();
        assert_eq!(schema.tables, []);
    }

    #[test]
    fn refuses_a_bad_column_line() {
        let source = "diesel::table! {\n    users (id) {\n        id -> Int4,\n        42 -> Text,\n    }\n}\n";
        assert_eq!(
            error(source),
            "src/schema.rs:4:9: expected `column_name -> SqlType,` in table! body"
        );
    }

    #[test]
    fn refuses_a_column_without_arrow() {
        let source = "diesel::table! {\n    users (id) {\n        id -> Int4,\n        name Text,\n    }\n}\n";
        assert_eq!(
            error(source),
            "src/schema.rs:4:14: expected `->` after column name `name` (`column_name -> SqlType,`)"
        );
    }

    #[test]
    fn refuses_a_missing_comma() {
        let source = "diesel::table! {\n    users (id) {\n        id -> Int4\n        name -> Text,\n    }\n}\n";
        assert_eq!(
            error(source),
            "src/schema.rs:4:9: expected `,` after the type of column `id`"
        );
    }

    #[test]
    fn refuses_a_duplicate_column() {
        let source = "diesel::table! {\n    users (id) {\n        id -> Int4,\n        name -> Text,\n      r#name -> Text,\n    }\n}\n";
        assert_eq!(
            error(source),
            "src/schema.rs:5:7: duplicate column `name` (first declared on line 4)"
        );
    }

    #[test]
    fn refuses_a_duplicate_table() {
        let source = "diesel::table! { users (id) { id -> Int4, } }\n\ndiesel::table! { users (id) { id -> Int4, } }\n";
        assert_eq!(
            error(source),
            "src/schema.rs:3:18: duplicate table `users` (first declared on line 1)"
        );
    }

    #[test]
    fn refuses_garbage_inside_table() {
        let source = "diesel::table! {\n    use diesel::sql_types::*;\n    fn users() {}\n}\n";
        assert_eq!(error(source), format!("src/schema.rs:3:5: {TABLE_SYNTAX}"));

        let source = "diesel::table! {\n    users (id) = 3;\n}\n";
        assert_eq!(
            error(source),
            "src/schema.rs:2:16: expected `{ column_name -> SqlType, … }` after table `users`"
        );

        // An empty body points at the closing brace of the macro.
        assert_eq!(
            error("diesel::table! {\n}\n"),
            format!("src/schema.rs:2:1: unexpected end of input, {TABLE_SYNTAX}")
        );
    }

    #[test]
    fn refuses_a_bad_type() {
        let source = "table! {\n    users {\n        id -> Int4,\n        tags -> Array<Nullable<Nullable<Int4>>>,\n    }\n}\n";
        assert_eq!(
            error(source),
            "src/schema.rs:4:32: `Nullable<…>` is only allowed around the whole column type or an array element"
        );
        let source =
            "table! {\n    users {\n        id -> Int4,\n        name -> &str,\n    }\n}\n";
        assert_eq!(
            error(source),
            "src/schema.rs:4:17: expected a Diesel SQL type such as `Int4` or `Nullable<Text>`"
        );
        let source = "table! {\n    users {\n        id -> Nullable<Int4,\n    }\n}\n";
        assert_eq!(
            error(source),
            "src/schema.rs:4:5: expected a Diesel SQL type such as `Int4` or `Nullable<Text>` after `id ->`"
        );
    }

    #[test]
    fn refuses_bad_attribute_values() {
        let source =
            "table! {\n    users {\n        #[sql_name = 5]\n        id -> Int4,\n    }\n}\n";
        assert_eq!(
            error(source),
            "src/schema.rs:3:22: expected a string literal: `#[sql_name = \"…\"]`"
        );
        let source = "table! {\n    users {\n        id -> Int4,\n        #[max_length = \"x\"]\n        name -> Varchar,\n    }\n}\n";
        assert_eq!(
            error(source),
            "src/schema.rs:4:24: expected an integer: `#[max_length = N]`"
        );
    }

    #[test]
    fn refuses_an_unknown_primary_key() {
        let source = "table! {\n    users (uid) {\n        id -> Int4,\n    }\n}\n";
        assert_eq!(
            error(source),
            "src/schema.rs:2:12: primary-key column `uid` is not a column of table `users`"
        );
    }

    #[test]
    fn refuses_a_bad_joinable() {
        assert_eq!(
            error("diesel::joinable!(posts users (user_id));\n"),
            format!("src/schema.rs:1:25: {JOINABLE_SYNTAX}")
        );
    }

    #[test]
    fn refuses_a_custom_type_without_name() {
        let source = "pub mod sql_types {\n    #[diesel(postgres_type(oid = 1, array_oid = 2))]\n    pub struct Odd;\n}\n";
        assert_eq!(
            error(source),
            "src/schema.rs:2:14: expected `postgres_type(name = \"…\")`: zmig needs the PostgreSQL name of the type"
        );
    }

    #[test]
    fn reports_rust_syntax_errors_with_position() {
        let source = "diesel::table! {\n    users (id) { id -> Int4, }\n}\n\nfn broken(x {}\n";
        assert_eq!(error(source), "src/schema.rs:5:10: not valid Rust: unbalanced delimiter, unterminated literal or stray character");
        let source = "pub mod sql_types {\n    pub struct Mood\n}\n";
        assert_eq!(
            error(source),
            "src/schema.rs:3:1: unexpected end of input, expected one of: `where`, parentheses, curly braces, `;`"
        );
    }
}
