//! The `#[zmig(...)]` attribute as a typed model: what the user asked for, before it is checked
//! against `schema.rs`. Parsed from syn in `attr`, checked in `valid`; nothing else in zmig
//! looks at raw attributes.

mod attr;
mod ctxt;
mod valid;

pub use attr::{parse_model, parse_model_attrs};
pub use ctxt::Ctxt;
pub use valid::{
    default_key_column, default_migration_name, default_swap_name, singular, MAX_IDENTIFIER_BYTES,
};

use proc_macro2::Span;
#[cfg(feature = "serde")]
use serde::Serialize;

/// A value from the attribute with the span of the tokens it came from, so every later error can
/// point at exactly those tokens (in the compiler for the derive, file:line for the xtask).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize))]
pub struct Spanned<T> {
    pub value: T,
    #[cfg_attr(feature = "serde", serde(skip))]
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

/// One model struct carrying `#[derive(Zmig)]`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize))]
pub struct ModelSpec {
    /// The struct's name (`Caterer`).
    pub struct_name: Spanned<String>,
    /// `#[diesel(table_name = …)]`: the full path as written (`crate::schema::caterers`).
    pub table_path: Spanned<Vec<String>>,
    /// `#[diesel(primary_key(…))]`, or `id` as Diesel's `Identifiable` assumes.
    pub primary_key: Vec<Spanned<String>>,
    pub migration: MigrationSpec,
    pub stage: Spanned<Stage>,
}

impl ModelSpec {
    /// The `table!` identifier: the last segment of `table_name`.
    pub fn table(&self) -> &str {
        self.table_path
            .value
            .last()
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The migration's name: `name = …`, or `<owner table>_<new table>` for an extract and
    /// `<table>_swap` for a swap.
    pub fn migration_name(&self) -> String {
        match &self.migration {
            MigrationSpec::Extract(extract) => match &extract.name {
                Some(name) => name.value.clone(),
                None => default_migration_name(self.table(), &extract.into.value),
            },
            MigrationSpec::Swap(swap) => match &swap.name {
                Some(name) => name.value.clone(),
                None => default_swap_name(self.table()),
            },
        }
    }
}

/// Which strategy the attribute asks for.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "strategy", rename_all = "snake_case"))]
pub enum MigrationSpec {
    // Boxed: an extract's attribute has many more parts than a swap's.
    Extract(Box<ExtractSpec>),
    Swap(SwapSpec),
}

impl MigrationSpec {
    /// The strategy's stages, in the only order they may ship.
    pub fn stages(&self) -> &'static [Stage] {
        match self {
            MigrationSpec::Extract(_) => &Stage::EXTRACT,
            MigrationSpec::Swap(_) => &Stage::SWAP,
        }
    }
}

/// `extract(into = …, columns(…), …)`: move a group of columns into a table of their own.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize))]
pub struct ExtractSpec {
    /// `into = addresses` or `into = "Addresses"`: the new table's name in the database.
    pub into: Spanned<String>,
    /// `name = caterers_addresses`: the migration's name in folder names and CLI commands.
    pub name: Option<Spanned<String>>,
    /// `key = caterer_id`: the owner-key column in the new table.
    pub key: Option<Spanned<String>>,
    /// `primary_key = id`: the new table's primary key (see [`NewPrimaryKey`](crate::plan::NewPrimaryKey)).
    pub primary_key: Option<Spanned<String>>,
    /// `unique_key = false`: an owner may have several rows in the new table (the owner key gets
    /// a plain index); only with a moved column as primary key, which says which row is the
    /// owner's own.
    pub unique_key: Option<Spanned<bool>>,
    /// `columns(street1, gh_login as login, visits: Int8)`.
    pub columns: Vec<MovedColumnSpec>,
    /// `filter = "street1 IS NOT NULL"`: only owners matching it get a row in the new table.
    pub filter: Option<Spanned<String>>,
    /// `sync = trigger | app`: who keeps the new table in step from dual_write on.
    pub sync: Option<Spanned<SyncMode>>,
    /// `model = Address`: the generated struct for a row of the new table.
    pub model: Option<Spanned<String>>,
    /// `rust_types(balance = bigdecimal::BigDecimal)`: the Rust type of a moved column in the
    /// generated row struct. Rust only: the SQL and [`ExtractSpec::to_attribute`] ignore it.
    pub rust_types: Vec<RustTypeSpec>,
}

/// One entry of `rust_types(…)`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize))]
pub struct RustTypeSpec {
    /// The column's name in the new table (its name after `as`).
    pub column: Spanned<String>,
    /// The Rust type as written, for `plan`; its span is the type's.
    pub rust_type: Spanned<String>,
    /// The type's tokens, spans kept, for the derive.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub tokens: proc_macro2::TokenStream,
}

/// Who keeps the new table in step with the owner from dual_write on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum SyncMode {
    /// Triggers on the owner table, in the writer's transaction: every write is synced,
    /// whichever code makes it.
    Trigger,
    /// Wrappers the derive generates call the migration's sync function in the application's
    /// transaction; writes that bypass them are not synced.
    App,
}

impl ExtractSpec {
    /// Whether the owner key is unique in the new table: one row per owner (the default).
    pub fn owner_key_unique(&self) -> bool {
        self.unique_key.as_ref().is_none_or(|u| u.value)
    }

    pub fn sync_mode(&self) -> SyncMode {
        self.sync
            .as_ref()
            .map(|s| s.value)
            .unwrap_or(SyncMode::Trigger)
    }

    /// The generated row struct's name: `model = …`, or the new table's singular in PascalCase.
    pub fn model_name(&self) -> String {
        match &self.model {
            Some(model) => model.value.clone(),
            None => pascal_case(&valid::singular(&self.into.value)),
        }
    }
}

/// `street_addresses` → `StreetAddresses`.
pub fn pascal_case(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// One entry of `columns(…)`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize))]
pub struct MovedColumnSpec {
    /// The owner column's Rust name, as in `table!` (`r#` stripped).
    pub source: Spanned<String>,
    /// `as new_name`: the column's name in the new table.
    pub rename: Option<Spanned<String>>,
    /// `: Int8`: the Diesel SQL type to widen to.
    pub widen: Option<Spanned<String>>,
}

impl MovedColumnSpec {
    /// The column's name in the new table.
    pub fn target(&self) -> &str {
        self.rename.as_ref().unwrap_or(&self.source).value.as_str()
    }
}

/// `swap(columns(…), references(…), name = …)`: change column types of a table by moving its
/// rows into a copy with the new types, behind a view that keeps serving the old name.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize))]
pub struct SwapSpec {
    /// `columns(id: Int8, price: Numeric = "round(price)::numeric")`: never empty.
    pub columns: Vec<SwapColumnSpec>,
    /// `references(trips.car_id)`: columns of other tables that reference the key and change
    /// type with it.
    pub references: Vec<ReferenceSpec>,
    /// `unique(vin, (make, plate))`: the table's unique indexes besides the primary key, each by
    /// its columns, which the swap enforces across its three tables.
    pub unique: Vec<UniqueSpec>,
    /// `name = cars_bigint`: the migration's name in folder names and CLI commands.
    pub name: Option<Spanned<String>>,
    /// Where `swap` is written, for errors about the attribute as a whole.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub span: proc_macro2::Span,
}

/// One entry of swap's `columns(…)`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize))]
pub struct SwapColumnSpec {
    /// The column's Rust name, as in `table!` (`r#` stripped).
    pub column: Spanned<String>,
    /// `: Int8`: the Diesel SQL type after the swap, as written (last path segment).
    pub new_type: Spanned<String>,
    /// `= "round(price)::numeric"`: the SQL expression over the old row giving the new value,
    /// for a change that is not a widening. `None`: a widening, a plain cast.
    pub cast: Option<Spanned<String>>,
}

/// One entry of `references(…)`: `trips.car_id`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize))]
pub struct ReferenceSpec {
    /// The referencing table's `table!` name.
    pub table: Spanned<String>,
    /// The referencing column's Rust name in that `table!`.
    pub column: Spanned<String>,
}

/// One entry of `unique(…)`: the columns of one unique index, in the index's order (`vin`, or
/// `(make, plate)`).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(Serialize))]
pub struct UniqueSpec {
    /// The columns' Rust names in `table!`, never empty.
    pub columns: Vec<Spanned<String>>,
}

impl SwapSpec {
    /// The attribute in its canonical form (without `stage`), for generated headers: stable
    /// across formatting changes and stage advances, so headers never go stale for those.
    pub fn to_attribute(&self) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let mut text = format!("{}: {}", attribute_name(&c.column.value), c.new_type.value);
                if let Some(cast) = &c.cast {
                    text.push_str(&format!(" = {:?}", cast.value));
                }
                text
            })
            .collect();
        let mut parts = vec![format!("columns({})", columns.join(", "))];
        if !self.references.is_empty() {
            let references: Vec<String> = self
                .references
                .iter()
                .map(|r| {
                    format!(
                        "{}.{}",
                        attribute_name(&r.table.value),
                        attribute_name(&r.column.value)
                    )
                })
                .collect();
            parts.push(format!("references({})", references.join(", ")));
        }
        if !self.unique.is_empty() {
            let entries: Vec<String> = self
                .unique
                .iter()
                .map(|u| match u.columns.as_slice() {
                    [one] => attribute_name(&one.value),
                    many => format!(
                        "({})",
                        many.iter()
                            .map(|c| attribute_name(&c.value))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })
                .collect();
            parts.push(format!("unique({})", entries.join(", ")));
        }
        if let Some(n) = &self.name {
            parts.push(format!("name = {}", attribute_name(&n.value)));
        }
        format!("swap({})", parts.join(", "))
    }
}

/// A name as the user could have written it in the attribute: a plain identifier, a raw one for
/// keywords (`r#type`), or a string for anything else.
fn attribute_name(text: &str) -> String {
    if syn::parse_str::<syn::Ident>(text).is_ok() {
        text.to_owned()
    } else if syn::parse_str::<syn::Ident>(&format!("r#{text}")).is_ok() {
        format!("r#{text}")
    } else {
        format!("{text:?}")
    }
}

pub use zmig_core::Stage;

impl ExtractSpec {
    /// The attribute in its canonical form (without `stage`), for generated headers: stable
    /// across formatting changes and stage advances, so headers never go stale for those.
    pub fn to_attribute(&self) -> String {
        let name = attribute_name;
        let mut parts = vec![format!("into = {}", name(&self.into.value))];
        if let Some(key) = &self.key {
            parts.push(format!("key = {}", name(&key.value)));
        }
        if let Some(pk) = &self.primary_key {
            parts.push(format!("primary_key = {}", name(&pk.value)));
        }
        if !self.owner_key_unique() {
            parts.push("unique_key = false".to_owned());
        }
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let mut text = name(&c.source.value);
                if let Some(rename) = &c.rename {
                    text.push_str(&format!(" as {}", name(&rename.value)));
                }
                if let Some(widen) = &c.widen {
                    text.push_str(&format!(": {}", widen.value));
                }
                text
            })
            .collect();
        parts.push(format!("columns({})", columns.join(", ")));
        if let Some(filter) = &self.filter {
            parts.push(format!("filter = {:?}", filter.value));
        }
        if let Some(n) = &self.name {
            parts.push(format!("name = {}", name(&n.value)));
        }
        if self.sync_mode() == SyncMode::App {
            parts.push("sync = app".to_owned());
        }
        format!("extract({})", parts.join(", "))
    }
}
