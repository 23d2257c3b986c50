//! The `#[zmig(...)]` attribute as a typed model: what the user asked for, before it is checked
//! against `schema.rs`. Parsed from syn in [`attr`], checked in [`valid`]; nothing else in zmig
//! looks at raw attributes.

mod attr;
mod ctxt;
mod valid;

pub use attr::{parse_model, parse_model_attrs};
pub use ctxt::Ctxt;
pub use valid::{default_key_column, default_migration_name, singular, MAX_IDENTIFIER_BYTES};

use proc_macro2::Span;
use serde::Serialize;

/// A value from the attribute with the span of the tokens it came from, so every later error can
/// point at exactly those tokens (in the compiler for the derive, file:line for the xtask).
#[derive(Debug, Clone, Serialize)]
pub struct Spanned<T> {
    pub value: T,
    #[serde(skip)]
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
#[derive(Debug, Clone, Serialize)]
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

    /// The migration's name: `name = …`, or `<owner table>_<new table>`.
    pub fn migration_name(&self) -> String {
        let MigrationSpec::Extract(extract) = &self.migration;
        match &extract.name {
            Some(name) => name.value.clone(),
            None => default_migration_name(self.table(), &extract.into.value),
        }
    }
}

/// Which strategy the attribute asks for.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum MigrationSpec {
    Extract(ExtractSpec),
}

/// `extract(into = …, columns(…), …)`: move a group of columns into a table of their own.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractSpec {
    /// `into = addresses` or `into = "Addresses"`: the new table's name in the database.
    pub into: Spanned<String>,
    /// `name = caterers_addresses`: the migration's name in folder names and CLI commands.
    pub name: Option<Spanned<String>>,
    /// `key = caterer_id`: the owner-key column in the new table.
    pub key: Option<Spanned<String>>,
    /// `primary_key = id`: the new table's primary key (see [`NewPrimaryKey`]).
    pub primary_key: Option<Spanned<String>>,
    /// `columns(street1, gh_login as login, visits: Int8)`.
    pub columns: Vec<MovedColumnSpec>,
    /// `filter = "street1 IS NOT NULL"`: only owners matching it get a row in the new table.
    pub filter: Option<Spanned<String>>,
    /// `sync = trigger | app`: who keeps the new table in step from dual_write on.
    pub sync: Option<Spanned<SyncMode>>,
    /// `model = Address`: the generated struct for a row of the new table.
    pub model: Option<Spanned<String>>,
}

/// Who keeps the new table in step with the owner from dual_write on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Triggers on the owner table, in the writer's transaction: every write is synced,
    /// whichever code makes it.
    Trigger,
    /// Wrappers the derive generates call the migration's sync function in the application's
    /// transaction; writes that bypass them are not synced.
    App,
}

impl ExtractSpec {
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
#[derive(Debug, Clone, Serialize)]
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

/// The phases of an extract, in the only order they may ship.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Expand,
    DualWrite,
    Backfill,
    ReadNew,
    WriteNew,
    Contract,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Expand,
        Stage::DualWrite,
        Stage::Backfill,
        Stage::ReadNew,
        Stage::WriteNew,
        Stage::Contract,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Expand => "expand",
            Stage::DualWrite => "dual_write",
            Stage::Backfill => "backfill",
            Stage::ReadNew => "read_new",
            Stage::WriteNew => "write_new",
            Stage::Contract => "contract",
        }
    }

    pub fn parse(text: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// 1-based position in the sequence.
    pub fn number(self) -> usize {
        Stage::ALL.iter().position(|s| *s == self).unwrap_or(0) + 1
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ExtractSpec {
    /// The attribute in its canonical form (without `stage`), for generated headers: stable
    /// across formatting changes and stage advances, so headers never go stale for those.
    pub fn to_attribute(&self) -> String {
        // As the user could have written it: a plain identifier, a raw one for keywords
        // (`r#type`), or a string for anything else.
        let name = |text: &str| {
            if syn::parse_str::<syn::Ident>(text).is_ok() {
                text.to_owned()
            } else if syn::parse_str::<syn::Ident>(&format!("r#{text}")).is_ok() {
                format!("r#{text}")
            } else {
                format!("{text:?}")
            }
        };
        let mut parts = vec![format!("into = {}", name(&self.into.value))];
        if let Some(key) = &self.key {
            parts.push(format!("key = {}", name(&key.value)));
        }
        if let Some(pk) = &self.primary_key {
            parts.push(format!("primary_key = {}", name(&pk.value)));
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
