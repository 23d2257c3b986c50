//! Every check that can be made on the attribute alone, without `schema.rs`: the derive runs
//! these at compile time, the xtask runs them before resolving the attribute against the schema.

use std::collections::{HashMap, HashSet};

use super::attr::NON_UNIQUE_FORMAT;
use super::{Ctxt, ExtractSpec, MigrationSpec, ModelSpec, Spanned, SwapSpec, SyncMode};
use crate::sql::filter;

pub use zmig_core::names::MAX_IDENTIFIER_BYTES;

/// Diesel SQL types a moved (extract) or swapped column may be widened to without an expression
/// (all are built-in PostgreSQL types).
pub const WIDEN_TARGETS: &[&str] = &[
    "Int4", "Integer", "Int8", "BigInt", "Bigint", "Numeric", "Decimal", "Float8", "Double", "Text",
];

pub(crate) fn check_model(cx: &mut Ctxt, spec: &ModelSpec) {
    match &spec.migration {
        MigrationSpec::Extract(extract) => check_extract(cx, spec, extract),
        MigrationSpec::Swap(swap) => check_swap(cx, spec, swap),
    }
}

fn check_extract(cx: &mut Ctxt, spec: &ModelSpec, extract: &ExtractSpec) {
    let owner = spec.table();

    check_identifier(cx, &extract.into, "the new table");
    if extract.into.value == owner {
        cx.error_at(
            extract.into.span,
            format!(
                "`into = {owner}` is the owner table itself; the columns move into a table of their own\n\
                 help: give the new table its own name, like `into = addresses`"
            ),
        );
    }
    if let Some(key) = &extract.key {
        check_identifier(cx, key, "the owner key column");
    }
    if let Some(pk) = &extract.primary_key {
        check_identifier(cx, pk, "the primary key column");
    }
    match &extract.name {
        Some(name) => check_migration_name(cx, name, "caterers_addresses"),
        None => check_default_name(
            cx,
            extract.into.span,
            &default_migration_name(owner, &extract.into.value),
            &format!("`{owner}` and `{}`", extract.into.value),
        ),
    }

    // Each owner column moves once, and each lands under a name of its own.
    let mut sources: HashMap<&str, &Spanned<String>> = HashMap::new();
    // New name → (span, owner column) of the first column landing there.
    let mut targets: HashMap<&str, (proc_macro2::Span, &str)> = HashMap::new();
    for column in &extract.columns {
        if sources
            .insert(column.source.value.as_str(), &column.source)
            .is_some()
        {
            cx.error_at(
                column.source.span,
                format!(
                    "column `{}` is listed twice in `columns(...)`",
                    column.source.value
                ),
            );
            // Its new name clashes too, but saying so twice on the same token helps nobody.
            continue;
        }
        if let Some(rename) = &column.rename {
            check_identifier(cx, rename, "the column's new name");
        }
        let target_span = column.rename.as_ref().unwrap_or(&column.source).span;
        if targets
            .insert(column.target(), (target_span, column.source.value.as_str()))
            .is_some()
        {
            cx.error_at(
                target_span,
                format!(
                    "two moved columns would both be named `{}` in the new table\nhelp: rename one of them: `{} as other_name`",
                    column.target(),
                    column.source.value
                ),
            );
        }
        if spec
            .primary_key
            .iter()
            .any(|pk| pk.value == column.source.value)
        {
            cx.error_at(
                column.source.span,
                format!(
                    "`{}` is the primary key of `{owner}`; it cannot move out of its table\nhelp: the new table gets its own key and a `{}` column pointing at the owner",
                    column.source.value,
                    default_key_column(owner),
                ),
            );
        }
        if let Some(widen) = &column.widen {
            check_widen_target(cx, &column.source.value, widen);
        }
    }

    // A Rust type is named for a column of the row struct: a moved column, under its new name.
    let mut typed: HashSet<&str> = HashSet::new();
    for rust_type in &extract.rust_types {
        let name = rust_type.column.value.as_str();
        if !typed.insert(name) {
            cx.error_at(
                rust_type.column.span,
                format!("`{name}` is listed twice in `rust_types(...)`"),
            );
        } else if !targets.contains_key(name) {
            let hint = match extract.columns.iter().find(|c| c.source.value == name) {
                Some(c) => format!("help: `{name}` is renamed: write `{} = …`", c.target()),
                None => format!(
                    "help: name a moved column by its name in the new table: {}",
                    extract
                        .columns
                        .iter()
                        .map(|c| format!("`{}`", c.target()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            cx.error_at(rust_type.column.span, format!("`rust_types` names `{name}`, which is not a column moved by `columns(...)`\n{hint}"));
        }
    }

    let (key, key_is_default) = match &extract.key {
        Some(key) => (key.value.clone(), false),
        None => (default_key_column(owner), true),
    };
    if let Some((span, source)) = targets.get(key.as_str()) {
        let why = if key_is_default {
            format!(", zmig's default for `{owner}`")
        } else {
            String::new()
        };
        cx.error_at(
            *span,
            format!(
                "a moved column would be named `{key}`, the owner key column of the new table{why}\n\
                 help: rename the column (`{source} as other_name`) or name the key yourself (`key = other_name`)"
            ),
        );
    }

    check_unique_key(cx, extract, &key);

    if let Some(filter) = &extract.filter {
        if let Err(error) = filter::tokenize(&filter.value) {
            cx.error_at(filter.span, format!("invalid filter: {error}\nhelp: the correct format looks like `filter = \"street1 IS NOT NULL\"`"));
        }
    }
}

/// `unique_key = false` says an owner may have several rows; the sync, the backfill, verify and
/// contract then need to know which one is the owner's own: the row whose primary key is the
/// owner's moved column. Without a moved primary key nothing says so.
fn check_unique_key(cx: &mut Ctxt, extract: &ExtractSpec, key: &str) {
    let Some(unique) = extract.unique_key.as_ref().filter(|u| !u.value) else {
        return;
    };
    let help = format!("help: the correct format looks like `{NON_UNIQUE_FORMAT}`");
    let moved = |name: &str| extract.columns.iter().any(|c| c.target() == name);
    match &extract.primary_key {
        Some(pk) if pk.value != key && moved(&pk.value) => {}
        Some(pk) if pk.value == key => cx.error_at(
            unique.span,
            format!(
                "`unique_key = false` with `primary_key = {key}`: the owner key is the primary key, so it is unique\n\
                 help: make one of the moved columns the primary key, which then says which row is the owner's own\n{help}"
            ),
        ),
        _ => cx.error_at(
            unique.span,
            format!(
                "`unique_key = false` needs a moved column as the new table's primary key: an owner's own row is \
                 the one whose primary key equals the owner's column, and the other rows of that owner are left alone\n\
                 help: name it with `primary_key = <moved column>`\n{help}"
            ),
        ),
    }
    if let Some(sync) = extract.sync.as_ref().filter(|s| s.value == SyncMode::App) {
        cx.error_at(
            sync.span,
            "`sync = app` cannot follow an owner's own row when the owner key is not unique: the sync function \
             sees the owner after the write only, not which row it had before\n\
             help: drop `sync = app` (the triggers see both), or drop `unique_key = false`",
        );
    }
}

fn check_swap(cx: &mut Ctxt, spec: &ModelSpec, swap: &SwapSpec) {
    let table = spec.table();
    match &swap.name {
        Some(name) => check_migration_name(cx, name, "cars_bigint"),
        None => check_default_name(
            cx,
            spec.table_path.span,
            &default_swap_name(table),
            &format!("`{table}`"),
        ),
    }

    let mut seen: HashSet<&str> = HashSet::new();
    for column in &swap.columns {
        if !seen.insert(column.column.value.as_str()) {
            cx.error_at(
                column.column.span,
                format!(
                    "column `{}` is listed twice in `columns(...)`",
                    column.column.value
                ),
            );
            continue;
        }
        match &column.cast {
            // Without an expression the old values are cast as they are: only a widening keeps
            // every one of them (checked against `table!` by the derive and against schema.rs
            // by generate).
            None => check_swap_widen_target(cx, &column.column.value, &column.new_type),
            Some(cast) => {
                if is_rust_type(&column.new_type.value) {
                    cx.error_at(
                        column.new_type.span,
                        format!(
                            "`{}` is a Rust type; the column's new type is a Diesel SQL type, as in `table!`\n\
                             help: the correct format looks like `{}: Numeric = \"round({})::numeric\"`",
                            column.new_type.value, column.column.value, column.column.value
                        ),
                    );
                }
                if let Err(error) = filter::tokenize(&cast.value) {
                    cx.error_at(
                        cast.span,
                        format!(
                            "invalid expression for `{}`: {}\n\
                             help: the expression computes the new value from the old row, like `\"round(price)::numeric\"`",
                            column.column.value,
                            error.for_expression()
                        ),
                    );
                }
            }
        }
    }

    let mut references: HashSet<(&str, &str)> = HashSet::new();
    for reference in &swap.references {
        let pair = (
            reference.table.value.as_str(),
            reference.column.value.as_str(),
        );
        if !references.insert(pair) {
            cx.error_at(
                reference.column.span,
                format!(
                    "`{}.{}` is listed twice in `references(...)`",
                    pair.0, pair.1
                ),
            );
        } else if reference.table.value == table {
            cx.error_at(
                reference.table.span,
                format!(
                    "`{table}.{col}` is a column of `{table}` itself, which the swap rebuilds whole\n\
                     help: list it with the other columns: `columns({col}: Int8)`",
                    col = reference.column.value
                ),
            );
        }
    }
}

/// Rust types users write where a Diesel SQL type belongs.
fn is_rust_type(name: &str) -> bool {
    [
        "i8",
        "i16",
        "i32",
        "i64",
        "u32",
        "u64",
        "f32",
        "f64",
        "String",
        "str",
        "BigDecimal",
    ]
    .contains(&name)
}

/// swap's `col: Type` without an expression: a widening, to a Diesel SQL type.
fn check_swap_widen_target(cx: &mut Ctxt, column: &str, new_type: &Spanned<String>) {
    if WIDEN_TARGETS.contains(&new_type.value.as_str()) {
        return;
    }
    let message = if is_rust_type(&new_type.value) {
        format!(
            "`{}` is a Rust type; the column's new type is a Diesel SQL type, as in `table!`",
            new_type.value
        )
    } else {
        format!(
            "without an expression zmig only widens, to the Diesel SQL types {}; any other change \
             needs the SQL that computes the new value",
            WIDEN_TARGETS.join(", ")
        )
    };
    cx.error_at(
        new_type.span,
        format!(
            "{message}\nhelp: write `{column}: Int8` to widen an integer column to bigint, or \
             `{column}: {} = \"<expression>\"` for any other change",
            if is_rust_type(&new_type.value) {
                "Numeric"
            } else {
                new_type.value.as_str()
            }
        ),
    );
}

/// Widening targets are Diesel SQL types, as in `table!`.
fn check_widen_target(cx: &mut Ctxt, column: &str, widen: &Spanned<String>) {
    if WIDEN_TARGETS.contains(&widen.value.as_str()) {
        return;
    }
    let message = if is_rust_type(&widen.value) {
        format!(
            "`{}` is a Rust type; the type to widen to is a Diesel SQL type, as in `table!`",
            widen.value
        )
    } else {
        format!(
            "zmig widens moved columns only to the Diesel SQL types {}",
            WIDEN_TARGETS.join(", ")
        )
    };
    cx.error_at(
        widen.span,
        format!("{message}\nhelp: write `{column}: Int8` to widen an integer column to bigint"),
    );
}

fn check_identifier(cx: &mut Ctxt, name: &Spanned<String>, what: &str) {
    if name.value.is_empty() {
        cx.error_at(name.span, format!("{what} needs a name"));
    } else if name.value.len() > MAX_IDENTIFIER_BYTES {
        cx.error_at(
            name.span,
            format!("`{}` is {} bytes; PostgreSQL would silently cut {what}'s name to {MAX_IDENTIFIER_BYTES}", name.value, name.value.len()),
        );
    } else if name.value.contains('\0') {
        cx.error_at(
            name.span,
            format!("{what}'s name cannot contain a NUL byte"),
        );
    }
}

pub use zmig_core::names::{is_migration_name, MAX_MIGRATION_NAME};

/// Migration names end up in folder names and on the command line: keep them boring.
fn check_migration_name(cx: &mut Ctxt, name: &Spanned<String>, example: &str) {
    if !is_migration_name(&name.value) {
        cx.error_at(
            name.span,
            format!("a migration name is 1 to 40 characters of a-z, 0-9 and _, starting with a letter\nhelp: the correct format looks like `name = {example}`"),
        );
    }
}

/// The name a migration gets without `name = …` obeys the same rule as one written out: a
/// longer one would have PostgreSQL cut `zmig_<name>_backfill`, `_diff` and `_key_range` to one
/// name, silently. `from` says which table names it was formed from.
fn check_default_name(cx: &mut Ctxt, span: proc_macro2::Span, default: &str, from: &str) {
    if is_migration_name(default) {
        return;
    }
    let why = if default.len() > MAX_MIGRATION_NAME {
        format!(
            "is {} characters, and a migration name has at most {MAX_MIGRATION_NAME} (PostgreSQL would cut the names \
             zmig forms from it, like `zmig_{default}_backfill`, to 63 bytes)",
            default.len()
        )
    } else {
        "is not 1 to 40 characters of a-z, 0-9 and _ starting with a letter".to_owned()
    };
    cx.error_at(
        span,
        format!(
            "the migration's default name `{default}`, formed from {from}, {why}\n\
             help: name the migration yourself, like `name = {}`",
            suggested_name(default)
        ),
    );
}

/// A name to suggest in place of a default that is too long or malformed: its first 40
/// characters that may appear in a name, cut at a word where one ends near the limit.
fn suggested_name(default: &str) -> String {
    let kept: String = default
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .skip_while(|c| !c.is_ascii_lowercase())
        .collect();
    if kept.is_empty() {
        return "my_migration".to_owned();
    }
    if kept.len() <= MAX_MIGRATION_NAME {
        return kept.trim_end_matches('_').to_owned();
    }
    let cut = &kept[..MAX_MIGRATION_NAME];
    match cut.rfind('_') {
        Some(at) if at >= MAX_MIGRATION_NAME / 2 => cut[..at].to_owned(),
        _ => cut.trim_end_matches('_').to_owned(),
    }
}

/// `caterers` → `caterer_id`: the owner key's default name.
pub fn default_key_column(owner_table: &str) -> String {
    format!("{}_id", singular(owner_table))
}

/// English singular of a table name, good enough for the names tables usually have.
pub fn singular(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    let cut = |n: usize| word[..word.len() - n].to_owned();
    if lower.ends_with("ies") && word.len() > 3 {
        format!("{}y", cut(3))
    } else if ["sses", "shes", "ches", "xes", "zes"]
        .iter()
        .any(|s| lower.ends_with(s))
    {
        cut(2)
    } else if lower.ends_with('s')
        && !lower.ends_with("ss")
        && !lower.ends_with("us")
        && word.len() > 1
    {
        cut(1)
    } else {
        word.to_owned()
    }
}

/// `<table>_swap`, lowercased, anything else turned into `_`: a swap's default migration name.
pub fn default_swap_name(table: &str) -> String {
    default_migration_name(table, "swap")
}

/// `<owner>_<new>`, lowercased, anything else turned into `_`: the default migration name.
pub fn default_migration_name(owner_table: &str, new_table: &str) -> String {
    let raw = format!("{owner_table}_{new_table}").to_ascii_lowercase();
    let words: Vec<&str> = raw
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    words.join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singularizes_common_table_names() {
        for (plural, single) in [
            ("caterers", "caterer"),
            ("companies", "company"),
            ("addresses", "address"),
            ("boxes", "box"),
            ("status", "status"),
            ("staff", "staff"),
        ] {
            assert_eq!(singular(plural), single, "{plural}");
        }
    }

    fn errors_of(attrs: proc_macro2::TokenStream) -> Vec<String> {
        let input: syn::DeriveInput = syn::parse2(quote::quote! {
            #[diesel(table_name = customer_subscription_billing_periods)]
            #attrs
            struct Period { id: i32 }
        })
        .expect("a struct");
        match super::super::parse_model(&input) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_default_name_obeys_the_rule_of_a_written_one() {
        let errors = errors_of(quote::quote! {
            #[zmig(extract(into = billing_period_adjustments, columns(amount)), stage = "expand")]
        });
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("default name `customer_subscription_billing_periods_billing_period_adjustments`")
                && errors[0].contains("is 64 characters")
                && errors[0].contains("help: name the migration yourself, like `name = customer_subscription_billing_periods`"),
            "{errors:?}"
        );
        // Named, the same pair is fine.
        assert!(errors_of(quote::quote! {
            #[zmig(extract(into = billing_period_adjustments, columns(amount), name = billing_adjustments), stage = "expand")]
        })
        .is_empty());
    }

    #[test]
    fn a_swap_of_a_long_table_needs_a_name() {
        let input: syn::DeriveInput = syn::parse2(quote::quote! {
            #[diesel(table_name = crate::schema::vehicle_registration_history_entries)]
            #[zmig(swap(columns(id: Int8)), stage = "prepare")]
            struct Entry { id: i32 }
        })
        .unwrap();
        let errors: Vec<String> = super::super::parse_model(&input)
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.len() == 1
                && errors[0].contains("`vehicle_registration_history_entries_swap`, formed from `vehicle_registration_history_entries`, is 41 characters"),
            "{errors:?}"
        );
    }

    #[test]
    fn suggested_names_are_names() {
        for default in [
            "customer_subscription_billing_periods_billing_period_adjustments",
            "a_very_very_very_very_very_very_very_long_thing",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "1st_orders",
            "9",
        ] {
            let suggested = suggested_name(default);
            assert!(is_migration_name(&suggested), "{default} -> {suggested}");
        }
    }
}
