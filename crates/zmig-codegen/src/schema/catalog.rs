//! What the database says about a table's columns that `schema.rs` cannot: the exact type with
//! its modifiers (`numeric(12,2)`, `character varying(500)`, `timestamp(3) without time zone`,
//! a domain, an array), the collation, the default and the comment.
//!
//! zmig-codegen has no database driver: a [`Catalog`] is handed in by whoever has a connection
//! (`zmig_runtime`'s command line, the tests). [`columns_query`] is the one query every catalog
//! runs, so what is recorded means the same wherever it was read.

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// One column as the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ExactColumn {
    /// `format_type(atttypid, atttypmod)`: the type as PostgreSQL itself spells it in DDL, with
    /// its modifiers, qualified when its schema is not on the search path.
    pub sql_type: String,
    /// `COLLATE` of the column when it is not its type's default, as a quoted name.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub collation: Option<String>,
    pub not_null: bool,
    /// The default expression (`pg_get_expr`), as `\d` shows it.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub default: Option<String>,
    /// `COMMENT ON COLUMN`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub comment: Option<String>,
    /// Whether equal values of the type may still differ (its B-tree equality does not imply
    /// identical values, as `1.0 = 1.00` for numeric, or it has no equality at all, as json,
    /// xml and point): the sync and verify then compare the column's text form, which every
    /// type has and which is exact. See [`compare_text_sql`].
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "std::ops::Not::not")
    )]
    pub compare_text: bool,
}

/// One row of [`columns_query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    pub name: String,
    pub exact: ExactColumn,
}

/// Reads tables' columns from the database `schema.rs` was printed from.
pub trait Catalog {
    /// Where the catalog reads from, for messages (a URL with its password hidden).
    fn describe(&self) -> String;

    /// The columns of the table `schema.table` (`None`: the search path's), in column order;
    /// none when there is no such table. Implementations run [`columns_query`].
    fn columns(&mut self, schema: Option<&str>, table: &str) -> Result<Vec<CatalogColumn>, String>;

    /// Runs `sql` in a transaction that is always rolled back, so it changes nothing: how
    /// `generate` asks the database whether it accepts a statement (as
    /// [`crate::sql::filter::Filter::generate_check_sql`] does). The database's error, with its
    /// hint, when it refuses.
    fn dry_run(&mut self, sql: &str) -> Result<(), String>;
}

/// The SQL expression for the `COLLATE` of attribute row `a` (of `pg_attribute`) with type row
/// `t` (of `pg_type`): a quoted, qualified collation name, NULL when it is the type's default.
/// The catalog reads it and the migrations' column checks compare with it, so both spell it alike.
pub fn collation_sql(a: &str, t: &str) -> String {
    format!(
        "CASE WHEN {a}.attcollation <> 0 AND {a}.attcollation <> {t}.typcollation \
         THEN (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname) \
         FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace \
         WHERE co.oid = {a}.attcollation) END"
    )
}

/// The SQL expression, over attribute row `a` and type row `t`, that is true when the column's
/// values must be compared by their text form. PostgreSQL itself says whether `=` means "the
/// same value": the default B-tree operator class of the type (a domain's base type; a type
/// that borrows another's class through an implicit binary cast, as varchar borrows text's;
/// an enum through `anyenum`) has the `equalimage` support function B-tree deduplication
/// relies on, `btequalimage`, or `btvarstrequalimage` under a deterministic collation. Every
/// other type (no class: json, xml, point; a class whose equal values may differ: numeric,
/// float, interval, jsonb, arrays, ranges) is compared as text.
pub fn compare_text_sql(a: &str, t: &str) -> String {
    format!(
        "NOT EXISTS (SELECT FROM pg_type bt \
         JOIN pg_opclass oc ON oc.opcdefault \
         JOIN pg_am am ON am.oid = oc.opcmethod AND am.amname = 'btree' \
         JOIN pg_amproc p ON p.amprocfamily = oc.opcfamily AND p.amprocnum = 4 \
         AND p.amproclefttype = oc.opcintype AND p.amprocrighttype = oc.opcintype \
         WHERE bt.oid = CASE WHEN {t}.typtype = 'd' THEN {t}.typbasetype ELSE {t}.oid END \
         AND (oc.opcintype = bt.oid \
         OR (bt.typtype = 'e' AND oc.opcintype = 'anyenum'::regtype) \
         OR EXISTS (SELECT FROM pg_cast c WHERE c.castsource = bt.oid \
         AND c.casttarget = oc.opcintype AND c.castmethod = 'b' AND c.castcontext = 'i')) \
         AND (p.amproc = 'btequalimage'::regproc \
         OR (p.amproc = 'btvarstrequalimage'::regproc \
         AND coalesce((SELECT co.collisdeterministic FROM pg_collation co \
         WHERE co.oid = {a}.attcollation), true))))"
    )
}

/// The query a [`Catalog`] runs, with `$1` the table as `regclass` text ([`regclass_text`]).
/// `to_regclass` makes a missing table no row rather than an error.
///
/// Columns: `name`, `sql_type`, `collation` (NULL for the type's default), `not_null`,
/// `default_expr`, `comment`, `compare_text`.
pub fn columns_query() -> String {
    format!(
        "SELECT a.attname::text AS name, \
         format_type(a.atttypid, a.atttypmod) AS sql_type, \
         {collation} AS collation, \
         a.attnotnull AS not_null, \
         pg_get_expr(d.adbin, d.adrelid) AS default_expr, \
         col_description(a.attrelid, a.attnum::int) AS comment, \
         {compare_text} AS compare_text \
         FROM pg_attribute a \
         JOIN pg_type t ON t.oid = a.atttypid \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
        collation = collation_sql("a", "t"),
        compare_text = compare_text_sql("a", "t"),
    )
}

/// The `regclass` text [`columns_query`] takes for `schema.table`.
pub fn regclass_text(schema: Option<&str>, table: &str) -> String {
    crate::sql::quote_qualified(schema, table)
}
