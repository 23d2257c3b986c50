//! A swap resolved against `schema.rs`: the table whose structure changes behind a view, the
//! columns that change type, and the columns of other tables that reference its key and widen
//! with it.

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use super::{describe, table_list, unknown_column, SourceRef, TableName};
use crate::schema::{self, pg_type_for, Column, Schema, SqlType, Table};
use crate::spec::{Ctxt, ModelSpec, Spanned, SwapSpec};
use crate::sql::filter::Filter;

/// A swap, resolved: what the SQL emitter and the plan printer work from.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Swap {
    /// The migration's name: folder names, function names, CLI argument (`cars_bigint`).
    pub name: String,
    pub stage: crate::spec::Stage,
    pub source: SourceRef,
    /// The attribute as written, for generated headers.
    pub attribute: String,
    /// The table being swapped, under its original name (`cars`).
    pub table: TableName,
    /// Every column of the table, in `table!` order.
    pub columns: Vec<SwapColumn>,
    /// The primary key's SQL name: a single integer column (`id`).
    pub key: String,
    /// Columns of other tables that reference the key and change type with it.
    pub references: Vec<Reference>,
    /// The unique indexes besides the primary key (`unique(...)`), each by its columns' SQL
    /// names: enforced across the three tables while the swap runs (see
    /// `crate::sql::swap::unique`). Absent in records written before they were supported.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub unique: Vec<Vec<String>>,
}

/// One column of the swapped table.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct SwapColumn {
    /// SQL name.
    pub name: String,
    /// PostgreSQL type today (`integer`).
    pub old_type: String,
    /// PostgreSQL type after the swap (`bigint`); equal to `old_type` when unchanged.
    pub new_type: String,
    /// For a change that is not a widening (`price: Numeric = "round(price)::numeric"`): the
    /// expression as written, for headers and `plan`.
    pub cast_text: Option<String>,
    /// The same expression tokenized and column-checked against the table, rendered by the
    /// emitter for the row it reads. `None`: a plain cast to `new_type`.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub cast: Option<crate::sql::filter::Filter>,
    pub nullable: bool,
}

impl SwapColumn {
    pub fn changes(&self) -> bool {
        self.old_type != self.new_type || self.cast.is_some()
    }
}

/// A column of another table that references the swapped table's key (`trips.car_id`).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Reference {
    pub table: TableName,
    /// SQL name of the referencing column.
    pub column: String,
    /// PostgreSQL types today and after the swap (`integer` → `bigint`).
    pub old_type: String,
    pub new_type: String,
    pub nullable: bool,
    /// The referencing table's primary key: a single integer column, for keyset batches.
    pub table_key: String,
}

impl Swap {
    /// `cars_old`, `cars_new`, `cars_temp`: the three tables each row lives in exactly one of.
    pub fn old_table(&self) -> TableName {
        self.sibling("old")
    }

    pub fn new_table(&self) -> TableName {
        self.sibling("new")
    }

    pub fn temp_table(&self) -> TableName {
        self.sibling("temp")
    }

    fn sibling(&self, suffix: &str) -> TableName {
        TableName {
            schema: self.table.schema.clone(),
            name: crate::sql::object_name(&[&self.table.name, suffix]),
        }
    }

    pub fn key_column(&self) -> &SwapColumn {
        self.columns
            .iter()
            .find(|c| c.name == self.key)
            .expect("the key is one of the columns")
    }
}

/// The key's PostgreSQL types a swap accepts: the move walks the key in batches, and references
/// follow it.
const INTEGER_TYPES: [&str; 3] = ["smallint", "integer", "bigint"];

/// Resolves `spec` (the attribute of `model`) against `schema`, the current `schema.rs`. Every
/// error is spanned on the attribute's tokens; the xtask turns them into file:line.
pub fn resolve_swap(
    model: &ModelSpec,
    spec: &SwapSpec,
    schema: &Schema,
    source: SourceRef,
) -> Result<Swap, syn::Error> {
    let mut cx = Ctxt::new();
    let Some(table) = schema.table(model.table()) else {
        return Err(syn::Error::new(
            model.table_path.span,
            format!(
                "table `{}` is not in {} (it has: {})\nhelp: run `diesel print-schema` or fix `#[diesel(table_name = ...)]`",
                model.table(),
                schema.file.display(),
                table_list(schema)
            ),
        ));
    };
    let type_of = |cx: &mut Ctxt, column: &Column, span| match pg_type_for(
        &column.ty,
        column.max_length,
        schema,
    ) {
        Ok(ty) => ty,
        Err(error) => {
            cx.error_at(span, format!("column `{}`: {error}", column.rust_name));
            String::new()
        }
    };

    let Some(key) = integer_key(table, schema) else {
        return Err(syn::Error::new(
            model.table_path.span,
            format!(
                "zmig swaps tables whose primary key is one integer column (Int2, Int4 or Int8): the move walks it in batches; `{}` has ({}) in {}",
                table.rust_name,
                describe_key(table),
                schema.file.display()
            ),
        ));
    };

    let mut changes: Vec<Change> = Vec::new();
    let sql_names: Vec<String> = table.columns.iter().map(|c| c.sql_name.clone()).collect();
    for entry in &spec.columns {
        let Some(column) = table.column(&entry.column.value) else {
            cx.error_at(
                entry.column.span,
                unknown_column(table, &entry.column.value, &schema.file),
            );
            continue;
        };
        let to = SqlType::Named(entry.new_type.value.clone());
        if let (true, Some(text)) = (column.rust_name == key.rust_name, &entry.cast) {
            cx.error_at(
                text.span,
                format!(
                    "`{}` is the primary key of `{}`: it keeps its values, and only widens\nhelp: write `{}: Int8` without an expression",
                    column.rust_name, table.rust_name, column.rust_name
                ),
            );
        }
        let cast = match &entry.cast {
            None => {
                check_widening(&mut cx, column, &entry.new_type);
                None
            }
            Some(text) => match Filter::resolve(&text.value, &sql_names) {
                Ok(filter) => Some((text.value.clone(), filter)),
                Err(error) => {
                    cx.error_at(
                        text.span,
                        format!(
                            "invalid expression for `{}`: {}",
                            column.rust_name,
                            error.for_expression()
                        ),
                    );
                    None
                }
            },
        };
        let new_type = match pg_type_for(&to, None, schema) {
            Ok(ty) => ty,
            Err(error) => {
                cx.error_at(entry.new_type.span, error.to_string());
                String::new()
            }
        };
        if column.rust_name == key.rust_name
            && !new_type.is_empty()
            && !INTEGER_TYPES.contains(&new_type.as_str())
        {
            cx.error_at(
                entry.new_type.span,
                format!(
                    "`{}` is the primary key of `{}`; it must stay an integer (Int2, Int4 or Int8): the move walks it in batches and the references follow it",
                    column.rust_name, table.rust_name
                ),
            );
        }
        changes.push(Change {
            column,
            new_type,
            cast,
        });
    }

    let columns: Vec<SwapColumn> = table
        .columns
        .iter()
        .map(|column| {
            let old_type = type_of(&mut cx, column, model.table_path.span);
            let change = changes
                .iter()
                .find(|c| c.column.rust_name == column.rust_name);
            let (new_type, cast_text, cast) = match change {
                Some(Change {
                    new_type,
                    cast: Some((text, filter)),
                    ..
                }) => (new_type.clone(), Some(text.clone()), Some(filter.clone())),
                Some(Change { new_type, .. }) => (new_type.clone(), None, None),
                None => (old_type.clone(), None, None),
            };
            SwapColumn {
                name: column.sql_name.clone(),
                old_type,
                new_type,
                cast_text,
                cast,
                nullable: column.nullable,
            }
        })
        .collect();
    let key_column = columns
        .iter()
        .find(|c| c.name == key.sql_name)
        .expect("the key is one of the table's columns");
    let key_entry = spec
        .columns
        .iter()
        .find(|c| c.column.value == key.rust_name);
    let key_changes = key_column.old_type != key_column.new_type;

    let mut references = Vec::new();
    for entry in &spec.references {
        let Some(other) = schema.table(&entry.table.value) else {
            cx.error_at(
                entry.table.span,
                format!(
                    "table `{}` is not in {} (it has: {})",
                    entry.table.value,
                    schema.file.display(),
                    table_list(schema)
                ),
            );
            continue;
        };
        let Some(column) = other.column(&entry.column.value) else {
            cx.error_at(
                entry.column.span,
                unknown_column(other, &entry.column.value, &schema.file),
            );
            continue;
        };
        let Some(other_key) = integer_key(other, schema) else {
            cx.error_at(
                entry.table.span,
                format!(
                    "`{}` needs a primary key of one integer column (Int2, Int4 or Int8): the move fills the new `{}` in batches of it; `{}` has ({})",
                    other.rust_name,
                    column.rust_name,
                    other.rust_name,
                    describe_key(other)
                ),
            );
            continue;
        };
        if !schema::same_type(&column.ty, &key.ty) {
            cx.error_at(
                entry.column.span,
                format!(
                    "`{}.{}` is `{}` and `{}.{}` is `{}`: a reference changes type with the key, so it must have the key's type\nhelp: drop it from `references(...)`",
                    other.rust_name,
                    column.rust_name,
                    describe(&column.ty),
                    table.rust_name,
                    key.rust_name,
                    describe(&key.ty)
                ),
            );
            continue;
        }
        if !key_changes {
            // Said once, at the first reference: the fix is the same for all of them.
            if references.is_empty() {
                cx.error_at(
                    entry.table.span,
                    format!(
                        "`references(...)` lists columns that change type with the key `{key}`, but `{key}` keeps its type\n\
                         help: change the key too, like `columns({key}: Int8)`, or drop `references(...)`; if schema.rs \
                         already says the new type (the one release before prepare), generate with DATABASE_URL (or \
                         --database-url) set, so zmig reads today's type from the database",
                        key = key.rust_name
                    ),
                );
            }
        }
        references.push(Reference {
            table: TableName {
                schema: other.pg_schema.clone(),
                name: other.sql_name.clone(),
            },
            column: column.sql_name.clone(),
            old_type: type_of(&mut cx, column, entry.column.span),
            new_type: key_column.new_type.clone(),
            nullable: column.nullable,
            table_key: other_key.sql_name.clone(),
        });
    }

    // A foreign key left at the old type would no longer fit the keys the table hands out once
    // they pass its range: every column schema.rs knows to reference the key changes with it.
    if key_changes {
        let listed = |child: &str, column: &str| {
            spec.references
                .iter()
                .any(|r| r.table.value == child && r.column.value == column)
        };
        let missing: Vec<String> = schema
            .joinables
            .iter()
            .filter(|j| j.parent == table.rust_name && !listed(&j.child, &j.foreign_key))
            .map(|j| format!("{}.{}", j.child, j.foreign_key))
            .collect();
        if !missing.is_empty() {
            let all: Vec<String> = spec
                .references
                .iter()
                .map(|r| format!("{}.{}", r.table.value, r.column.value))
                .chain(missing.iter().cloned())
                .collect();
            let span = key_entry.map_or(model.table_path.span, |e| e.column.span);
            cx.error_at(
                span,
                format!(
                    "`{key}` changes type, and {file} says {list} reference{s} `{table}` (`joinable!`): {they} must change with it\n\
                     help: add `references({all})`",
                    key = key.rust_name,
                    file = schema.file.display(),
                    list = missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
                    s = if missing.len() == 1 { "s" } else { "" },
                    table = table.rust_name,
                    they = if missing.len() == 1 { "it" } else { "they" },
                    all = all.join(", ")
                ),
            );
        }
    }

    let unique = resolve_unique(&mut cx, spec, table, &columns, &key.sql_name, &schema.file);

    cx.check()?;
    Ok(Swap {
        name: model.migration_name(),
        stage: model.stage.value,
        source,
        attribute: spec.to_attribute(),
        table: TableName {
            schema: table.pg_schema.clone(),
            name: table.sql_name.clone(),
        },
        key: key.sql_name.clone(),
        columns,
        references,
        unique,
    })
}

/// The entries of `unique(...)` as SQL column names: each a column of the table that keeps its
/// type (the index is copied to the new tables as it is, and the claims compare values of one
/// type), not the key alone (the primary key is enforced already), listed once.
fn resolve_unique(
    cx: &mut Ctxt,
    spec: &SwapSpec,
    table: &Table,
    columns: &[SwapColumn],
    key: &str,
    file: &std::path::Path,
) -> Vec<Vec<String>> {
    let mut unique: Vec<Vec<String>> = Vec::new();
    for entry in &spec.unique {
        if let [only] = entry.columns.as_slice() {
            if table.column(&only.value).is_some_and(|c| c.sql_name == key) {
                cx.error_at(
                    only.span,
                    format!(
                        "`{}` is the primary key: it is unique already\nhelp: drop it from `unique(...)`",
                        only.value
                    ),
                );
                continue;
            }
        }
        let mut names = Vec::new();
        for column in &entry.columns {
            let Some(found) = table.column(&column.value) else {
                cx.error_at(column.span, unknown_column(table, &column.value, file));
                continue;
            };
            let sql = &found.sql_name;
            if names.contains(sql) {
                cx.error_at(
                    column.span,
                    format!("`{}` is listed twice in this index", column.value),
                );
                continue;
            }
            if columns.iter().any(|c| &c.name == sql && c.changes()) {
                cx.error_at(
                    column.span,
                    format!(
                        "`{}` changes type in this swap: zmig carries a unique index across the swap only over columns that keep their type\nhelp: change its type in another swap, after this one",
                        column.value
                    ),
                );
                continue;
            }
            names.push(sql.clone());
        }
        if names.len() != entry.columns.len() {
            continue;
        }
        if unique.contains(&names) {
            cx.error_at(
                entry.columns[0].span,
                "this unique index is listed twice in `unique(...)`",
            );
        } else {
            unique.push(names);
        }
    }
    unique
}

impl Swap {
    /// Restores what `serde` leaves out of a recorded swap (see [`crate::migrations::SWAP_SNAPSHOT`]):
    /// the cast expressions, tokenized and checked again against the recorded columns.
    pub fn restore_casts(&mut self) -> Result<(), crate::sql::filter::FilterError> {
        let names: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        for column in &mut self.columns {
            column.cast = match &column.cast_text {
                Some(text) => Some(Filter::resolve(text, &names)?),
                None => None,
            };
        }
        Ok(())
    }
}

/// One entry of `columns(...)`, resolved.
struct Change<'a> {
    column: &'a Column,
    /// PostgreSQL type.
    new_type: String,
    /// The expression as written, and checked.
    cast: Option<(String, Filter)>,
}

/// The table's primary key when it is one integer column.
fn integer_key<'a>(table: &'a Table, schema: &Schema) -> Option<&'a Column> {
    let [pk] = table.primary_key.as_slice() else {
        return None;
    };
    let column = table.column(pk)?;
    let ty = pg_type_for(&column.ty, column.max_length, schema).ok()?;
    INTEGER_TYPES.contains(&ty.as_str()).then_some(column)
}

fn describe_key(table: &Table) -> String {
    table
        .primary_key
        .iter()
        .map(|pk| match table.column(pk) {
            Some(column) => format!("{pk}: {}", describe(&column.ty)),
            None => pk.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `col: Type` without an expression: the old values are cast as they are, which only a
/// widening does without losing or rejecting any.
fn check_widening(cx: &mut Ctxt, column: &Column, new_type: &Spanned<String>) {
    let to = SqlType::Named(new_type.value.clone());
    if schema::same_type(&column.ty, &to) {
        cx.error_at(
            new_type.span,
            format!(
                "`{}` already is `{}` in schema.rs\nhelp: drop it from `columns(...)`, or give an expression to rewrite its values: `{}: {} = \"...\"`; \
                 if only schema.rs says so (the one release before prepare), generate with DATABASE_URL (or --database-url) set, \
                 so zmig reads today's type from the database",
                column.rust_name, new_type.value, column.rust_name, new_type.value
            ),
        );
    } else if !schema::is_widening(&column.ty, &to) {
        cx.error_at(
            new_type.span,
            format!(
                "`{col}` is `{from}`; changing it to `{to}` could lose or reject values, and without an expression zmig only widens (Int2 → Int4 → Int8 → Numeric, Float4 → Float8, Varchar → Text)\n\
                 help: give the conversion as SQL over the old row: `{col}: {to} = \"...\"`",
                col = column.rust_name,
                from = describe(&column.ty),
                to = new_type.value,
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    use super::*;
    use crate::plan::{swap_phases, Ships};
    use crate::spec::{parse_model, MigrationSpec, Stage};

    /// The cars example's schema.rs.
    const CARS: &str = r#"
diesel::table! {
    cars (id) {
        id -> Int4,
        make -> Text,
        model -> Text,
        year -> Int4,
        mileage -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    trips (id) {
        id -> Int8,
        car_id -> Int4,
        km -> Int4,
    }
}

diesel::table! {
    plates (code) {
        code -> Text,
        car_id -> Nullable<Int4>,
    }
}

diesel::joinable!(trips -> cars (car_id));
diesel::allow_tables_to_appear_in_same_query!(cars, trips, plates);
"#;

    fn resolve_in(schema: &str, attr: TokenStream) -> Result<Swap, Vec<String>> {
        let schema = crate::schema::parse_schema(std::path::Path::new("src/schema.rs"), schema)
            .expect("the schema parses");
        let input: syn::DeriveInput = syn::parse2(quote! {
            #[diesel(table_name = crate::schema::cars)]
            #[zmig(#attr, stage = "prepare")]
            struct Car { id: i32 }
        })
        .expect("a struct");
        let model = parse_model(&input).expect("the attribute parses");
        let MigrationSpec::Swap(spec) = &model.migration else {
            panic!("not a swap");
        };
        let source = SourceRef {
            file: "src/models.rs".into(),
            line: 3,
            model: "Car".to_owned(),
        };
        resolve_swap(&model, spec, &schema, source)
            .map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
    }

    fn resolve(attr: TokenStream) -> Result<Swap, Vec<String>> {
        resolve_in(CARS, attr)
    }

    fn error(attr: TokenStream) -> String {
        let errors = resolve(attr).expect_err("refused");
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.into_iter().next().unwrap_or_default()
    }

    #[test]
    fn unique_entries_resolve_to_sql_names_and_are_checked() {
        let swap = resolve(quote!(swap(
            columns(id: Int8),
            references(trips.car_id),
            unique(make, (make, model))
        )))
        .unwrap();
        assert_eq!(swap.unique, [vec!["make"], vec!["make", "model"]]);
        for (attr, expected) in [
            (
                quote!(swap(columns(id: Int8), references(trips.car_id), unique(vin))),
                "`cars` has no column `vin` in src/schema.rs (it has: id, make, model, year, mileage, created_at)",
            ),
            (
                quote!(swap(columns(id: Int8, mileage: Int8), references(trips.car_id), unique((make, mileage)))),
                "`mileage` changes type in this swap: zmig carries a unique index across the swap only over columns that keep their type",
            ),
            (
                quote!(swap(columns(id: Int8), references(trips.car_id), unique(id))),
                "`id` is the primary key: it is unique already",
            ),
            (
                quote!(swap(columns(id: Int8), references(trips.car_id), unique((make, make)))),
                "`make` is listed twice in this index",
            ),
            (
                quote!(swap(columns(id: Int8), references(trips.car_id), unique(make, make))),
                "this unique index is listed twice in `unique(...)`",
            ),
        ] {
            let message = error(attr.clone());
            assert!(message.starts_with(expected), "{attr}: {message}");
        }
    }

    #[test]
    fn resolves_the_cars_swap() {
        let swap =
            resolve(quote!(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint)))
                .unwrap();
        assert_eq!(swap.name, "cars_bigint");
        assert_eq!(swap.stage, Stage::Prepare);
        assert_eq!(
            swap.attribute,
            "swap(columns(id: Int8), references(trips.car_id), name = cars_bigint)"
        );
        assert_eq!(
            swap.table,
            TableName {
                schema: None,
                name: "cars".to_owned()
            }
        );
        assert_eq!(swap.key, "id");
        let columns: Vec<(&str, &str, &str, bool)> = swap
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.old_type.as_str(),
                    c.new_type.as_str(),
                    c.changes(),
                )
            })
            .collect();
        assert_eq!(
            columns,
            [
                ("id", "integer", "bigint", true),
                ("make", "text", "text", false),
                ("model", "text", "text", false),
                ("year", "integer", "integer", false),
                ("mileage", "integer", "integer", false),
                (
                    "created_at",
                    "timestamp with time zone",
                    "timestamp with time zone",
                    false
                ),
            ]
        );
        let [reference] = swap.references.as_slice() else {
            panic!("one reference: {:?}", swap.references);
        };
        assert_eq!(reference.table.name, "trips");
        assert_eq!(reference.column, "car_id");
        assert_eq!(
            (reference.old_type.as_str(), reference.new_type.as_str()),
            ("integer", "bigint")
        );
        assert!(!reference.nullable);
        assert_eq!(reference.table_key, "id");
    }

    #[test]
    fn other_type_changes_take_an_expression_checked_against_the_table() {
        let swap = resolve(quote!(swap(columns(mileage: Int2 = "least(mileage, 32767)::smallint", make: Varchar = "upper(make)")))).unwrap();
        assert_eq!(swap.name, "cars_swap");
        let mileage = swap.columns.iter().find(|c| c.name == "mileage").unwrap();
        assert_eq!(
            (mileage.old_type.as_str(), mileage.new_type.as_str()),
            ("integer", "smallint")
        );
        assert_eq!(
            mileage.cast_text.as_deref(),
            Some("least(mileage, 32767)::smallint")
        );
        assert_eq!(
            mileage.cast.as_ref().map(|c| c.render("o")).as_deref(),
            Some("(least(o.\"mileage\", 32767)::smallint)")
        );
        assert!(
            swap.references.is_empty(),
            "the key keeps its type: trips.car_id need not change"
        );

        let message =
            error(quote!(swap(columns(mileage: Int2 = "least(milage, 32767)::smallint"))));
        assert!(message.starts_with("invalid expression for `mileage`: unknown column `milage` in the expression; the table has id, make, model, year, mileage, created_at"), "{message}");
    }

    #[test]
    fn without_an_expression_only_widening() {
        let message = error(quote!(swap(columns(mileage: Int8, year: Int4))));
        assert!(message.starts_with("`year` already is `Int4`"), "{message}");
        let message = error(quote!(swap(columns(created_at: Text, mileage: Numeric))));
        assert!(
            message.starts_with(
                "`created_at` is `Timestamptz`; changing it to `Text` could lose or reject values"
            ),
            "{message}"
        );
        assert!(
            message.contains(
                "help: give the conversion as SQL over the old row: `created_at: Text = \"...\"`"
            ),
            "{message}"
        );
    }

    #[test]
    fn the_key_stays_an_integer_and_keeps_its_values() {
        let message = error(quote!(swap(columns(id: Numeric), references(trips.car_id))));
        assert!(message.contains("it must stay an integer"), "{message}");
        let message = error(quote!(swap(columns(id: Int8 = "id + 1"), references(trips.car_id))));
        assert!(
            message.contains("it keeps its values, and only widens"),
            "{message}"
        );
        let message = resolve_in(
            &CARS.replace("cars (id)", "cars (make)"),
            quote!(swap(columns(id: Int8))),
        )
        .unwrap_err()
        .join("\n");
        assert!(message.contains("`cars` has (make: Text)"), "{message}");
    }

    #[test]
    fn every_joinable_reference_changes_with_the_key() {
        let message = error(quote!(swap(columns(id: Int8))));
        assert!(
            message.starts_with("`id` changes type, and src/schema.rs says `trips.car_id` references `cars` (`joinable!`): it must change with it"),
            "{message}"
        );
        assert!(
            message.ends_with("help: add `references(trips.car_id)`"),
            "{message}"
        );
        // A reference schema.rs does not declare is taken as listed.
        let swap =
            resolve(quote!(swap(columns(id: Int8), references(trips.car_id, plates.car_id))))
                .unwrap_err();
        assert!(
            swap.iter()
                .any(|e| e.contains("`plates` needs a primary key of one integer column")),
            "{swap:?}"
        );
    }

    #[test]
    fn references_are_checked() {
        for (attr, expected) in [
            (quote!(swap(columns(id: Int8), references(trips.car_id, tripz.car_id))), "table `tripz` is not in src/schema.rs (it has: cars, trips, plates)"),
            (quote!(swap(columns(id: Int8), references(trips.car_id, trips.carid))), "`trips` has no column `carid` in src/schema.rs (it has: id, car_id, km)"),
            (quote!(swap(columns(id: Int8), references(trips.car_id, trips.id))), "`trips.id` is `Int8` and `cars.id` is `Int4`"),
            (quote!(swap(columns(mileage: Int8), references(trips.car_id))), "`references(...)` lists columns that change type with the key `id`, but `id` keeps its type"),
        ] {
            let errors = resolve(attr.clone()).unwrap_err();
            assert!(errors.iter().any(|e| e.starts_with(expected)), "{attr}: {errors:?}");
        }
    }

    #[test]
    fn unknown_tables_and_columns_name_what_exists() {
        let message = error(quote!(swap(columns(mileage: Int8, colour: Text = "'red'"))));
        assert!(message.starts_with("`cars` has no column `colour` in src/schema.rs (it has: id, make, model, year, mileage, created_at)"), "{message}");
        let errors = resolve_in(
            &CARS.replace("cars (id)", "autos (id)"),
            quote!(swap(columns(id: Int8))),
        )
        .unwrap_err();
        assert!(
            errors[0]
                .starts_with("table `cars` is not in src/schema.rs (it has: autos, trips, plates)"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_swap_has_three_phases() {
        let swap =
            resolve(quote!(swap(columns(id: Int8), references(trips.car_id), name = cars_bigint)))
                .unwrap();
        let phases = swap_phases(&swap);
        let shape: Vec<(Stage, Ships, bool)> = phases
            .iter()
            .map(|p| (p.stage, p.ships, p.has_sql))
            .collect();
        assert_eq!(
            shape,
            [
                (Stage::Prepare, Ships::Migration, true),
                (Stage::Move, Ships::RuntimeTask, false),
                (Stage::Finalize, Ships::MigrationAndCode, true),
            ]
        );
        assert!(
            phases[0].summary.contains("id integer → bigint"),
            "{}",
            phases[0].summary
        );
        assert!(
            phases[1]
                .summary
                .contains("`cargo xtask zmig backfill cars_bigint`"),
            "{}",
            phases[1].summary
        );
        assert!(
            phases[2].gate.contains("diesel print-schema"),
            "{}",
            phases[2].gate
        );
    }
}
