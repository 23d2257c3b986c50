//! Diesel SQL types: their PostgreSQL spelling, their aliases, and which changes are safe.

use super::{Schema, SqlType};
use crate::sql::quote_qualified;

/// A type zmig cannot write as PostgreSQL.
#[derive(Debug)]
pub enum SqlTypeError {
    Unknown { name: String },
}

// By hand rather than with thiserror: this crate is on the derive's proc-macro path, and
// thiserror's derive would build a second syn major there.
impl std::fmt::Display for SqlTypeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlTypeError::Unknown { name } => write!(
                f,
                "unknown SQL type `{name}`: it is not a Diesel built-in type; declare it in `pub mod \
                 sql_types` with `#[diesel(postgres_type(name = \"…\"))]` (as `diesel print-schema` \
                 does for custom types and enums) so zmig knows its PostgreSQL name"
            ),
        }
    }
}

impl std::error::Error for SqlTypeError {}

/// The PostgreSQL type to write in `CREATE TABLE` / `ALTER COLUMN … TYPE` for a column of
/// Diesel type `ty`, `max_length` being its `#[max_length = N]`.
pub fn pg_type_for(
    ty: &SqlType,
    max_length: Option<u32>,
    schema: &Schema,
) -> Result<String, SqlTypeError> {
    match ty {
        // The length applies to the elements: `character varying(20)[]`.
        SqlType::Array(element) => Ok(format!("{}[]", pg_type_for(element, max_length, schema)?)),
        SqlType::Named(name) => {
            // Declared types win over built-ins, as in the schema's own Rust: print-schema's
            // `use super::sql_types::Citext;` shadows the `diesel::sql_types::*` glob import.
            if let Some(custom) = schema.custom_type(name) {
                return Ok(quote_qualified(
                    custom.pg_schema.as_deref(),
                    &custom.pg_name,
                ));
            }
            builtin_pg_type(canonical_name(name), max_length)
                .ok_or_else(|| SqlTypeError::Unknown { name: name.clone() })
        }
    }
}

/// The PostgreSQL spelling of a canonical Diesel type name, `None` when it is not a built-in.
fn builtin_pg_type(canonical: &str, max_length: Option<u32>) -> Option<String> {
    let fixed = match canonical {
        "Int2" => "smallint",
        "Int4" => "integer",
        "Int8" => "bigint",
        "Float4" => "real",
        "Float8" => "double precision",
        "Numeric" => "numeric",
        "Text" => "text",
        "Varchar" => return Some(with_length("character varying", max_length)),
        // Plain `character` means `character(1)`; without a length the column is `bpchar`.
        "Bpchar" => {
            return Some(max_length.map_or_else(
                || "bpchar".to_string(),
                |_| with_length("character", max_length),
            ))
        }
        "Bool" => "boolean",
        "Timestamp" => "timestamp without time zone",
        "Timestamptz" => "timestamp with time zone",
        "Date" => "date",
        "Time" => "time without time zone",
        "Interval" => "interval",
        "Uuid" => "uuid",
        "Json" => "json",
        "Jsonb" => "jsonb",
        "Binary" => "bytea",
        "Inet" => "inet",
        "Cidr" => "cidr",
        "MacAddr" => "macaddr",
        "MacAddr8" => "macaddr8",
        "Money" => "money",
        "Oid" => "oid",
        "Citext" => "citext",
        "Int4range" => "int4range",
        "Int8range" => "int8range",
        "Numrange" => "numrange",
        "Tsrange" => "tsrange",
        "Tstzrange" => "tstzrange",
        "Daterange" => "daterange",
        "Int4multirange" => "int4multirange",
        "Int8multirange" => "int8multirange",
        "Nummultirange" => "nummultirange",
        "Tsmultirange" => "tsmultirange",
        "Tstzmultirange" => "tstzmultirange",
        "Datemultirange" => "datemultirange",
        _ => return None,
    };
    Some(fixed.to_string())
}

/// `base(N)` when a length is given, `base` otherwise.
fn with_length(base: &str, max_length: Option<u32>) -> String {
    match max_length {
        Some(length) => format!("{base}({length})"),
        None => base.to_string(),
    }
}

/// One name per Diesel type: Diesel exports aliases (`Integer` is `Int4`), and comparing two
/// schemas must not see a change where only the spelling changed.
pub fn canonical_name(name: &str) -> &str {
    match name {
        "SmallInt" | "Smallint" => "Int2",
        "Integer" => "Int4",
        "BigInt" | "Bigint" => "Int8",
        "Float" => "Float4",
        "Double" => "Float8",
        "Decimal" => "Numeric",
        "VarChar" => "Varchar",
        "Char" => "Bpchar",
        "Bytea" => "Binary",
        "Cents" => "Money",
        other => other,
    }
}

/// Whether `a` and `b` are the same type, aliases aside.
pub fn same_type(a: &SqlType, b: &SqlType) -> bool {
    match (a, b) {
        (SqlType::Named(a), SqlType::Named(b)) => canonical_name(a) == canonical_name(b),
        (SqlType::Array(a), SqlType::Array(b)) => same_type(a, b),
        _ => false,
    }
}

/// Whether changing a column from `from` to `to` keeps every existing value exactly, so old
/// and new code can share the column while the migration runs. Deliberately conservative:
/// `Timestamp` → `Timestamptz` is refused because the result depends on the session time
/// zone, and integer → float or float → numeric because they round.
pub fn is_widening(from: &SqlType, to: &SqlType) -> bool {
    match (from, to) {
        (SqlType::Named(from), SqlType::Named(to)) => matches!(
            (canonical_name(from), canonical_name(to)),
            ("Int2", "Int4" | "Int8" | "Numeric")
                | ("Int4", "Int8" | "Numeric")
                | ("Int8", "Numeric")
                | ("Float4", "Float8")
                | ("Varchar" | "Bpchar", "Text")
        ),
        // `integer[]` → `bigint[]` converts element by element.
        (SqlType::Array(from), SqlType::Array(to)) => is_widening(from, to),
        _ => false,
    }
}

/// Diesel's alias for `Range<T>` / `Multirange<T>` (`wrapper`) over element type `element`:
/// `Int4range` for `Range<Int4>`. `None` when PostgreSQL has no such built-in range.
pub(super) fn range_type_name(wrapper: &str, element: &str) -> Option<&'static str> {
    let multi = match wrapper {
        "Range" => false,
        "Multirange" => true,
        _ => return None,
    };
    let (range, multirange) = match canonical_name(element) {
        "Int4" => ("Int4range", "Int4multirange"),
        "Int8" => ("Int8range", "Int8multirange"),
        "Numeric" => ("Numrange", "Nummultirange"),
        "Timestamp" => ("Tsrange", "Tsmultirange"),
        "Timestamptz" => ("Tstzrange", "Tstzmultirange"),
        "Date" => ("Daterange", "Datemultirange"),
        _ => return None,
    };
    Some(if multi { multirange } else { range })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::CustomType;

    fn named(name: &str) -> SqlType {
        SqlType::Named(name.to_string())
    }

    fn array(element: SqlType) -> SqlType {
        SqlType::Array(Box::new(element))
    }

    fn pg(name: &str, max_length: Option<u32>) -> String {
        pg_type_for(&named(name), max_length, &Schema::default()).unwrap()
    }

    #[test]
    fn maps_every_builtin_and_alias() {
        let cases = [
            ("Int2", "smallint"),
            ("SmallInt", "smallint"),
            ("Smallint", "smallint"),
            ("Int4", "integer"),
            ("Integer", "integer"),
            ("Int8", "bigint"),
            ("BigInt", "bigint"),
            ("Bigint", "bigint"),
            ("Float4", "real"),
            ("Float", "real"),
            ("Float8", "double precision"),
            ("Double", "double precision"),
            ("Numeric", "numeric"),
            ("Decimal", "numeric"),
            ("Text", "text"),
            ("Varchar", "character varying"),
            ("VarChar", "character varying"),
            ("Bpchar", "bpchar"),
            ("Char", "bpchar"),
            ("Bool", "boolean"),
            ("Timestamp", "timestamp without time zone"),
            ("Timestamptz", "timestamp with time zone"),
            ("Date", "date"),
            ("Time", "time without time zone"),
            ("Interval", "interval"),
            ("Uuid", "uuid"),
            ("Json", "json"),
            ("Jsonb", "jsonb"),
            ("Binary", "bytea"),
            ("Bytea", "bytea"),
            ("Inet", "inet"),
            ("Cidr", "cidr"),
            ("MacAddr", "macaddr"),
            ("MacAddr8", "macaddr8"),
            ("Money", "money"),
            ("Cents", "money"),
            ("Oid", "oid"),
            ("Citext", "citext"),
            ("Int4range", "int4range"),
            ("Int8range", "int8range"),
            ("Numrange", "numrange"),
            ("Tsrange", "tsrange"),
            ("Tstzrange", "tstzrange"),
            ("Daterange", "daterange"),
            ("Int4multirange", "int4multirange"),
            ("Datemultirange", "datemultirange"),
        ];
        for (diesel, postgres) in cases {
            assert_eq!(pg(diesel, None), postgres, "{diesel}");
        }
    }

    #[test]
    fn applies_max_length_to_character_types_only() {
        assert_eq!(pg("Varchar", Some(255)), "character varying(255)");
        assert_eq!(pg("VarChar", Some(8)), "character varying(8)");
        assert_eq!(pg("Bpchar", Some(2)), "character(2)");
        assert_eq!(pg("Char", Some(3)), "character(3)");
        assert_eq!(pg("Text", Some(3)), "text");
    }

    #[test]
    fn maps_arrays() {
        let schema = Schema::default();
        assert_eq!(
            pg_type_for(&array(named("Int4")), None, &schema).unwrap(),
            "integer[]"
        );
        assert_eq!(
            pg_type_for(&array(named("Varchar")), Some(20), &schema).unwrap(),
            "character varying(20)[]"
        );
        assert_eq!(
            pg_type_for(&array(array(named("Text"))), None, &schema).unwrap(),
            "text[][]"
        );
    }

    #[test]
    fn quotes_custom_types() {
        let schema = Schema {
            custom_types: vec![
                CustomType {
                    rust_name: "Mood".into(),
                    pg_name: "mood".into(),
                    pg_schema: None,
                },
                CustomType {
                    rust_name: "OrderState".into(),
                    pg_name: "Order \"State\"".into(),
                    pg_schema: Some("app".into()),
                },
                // print-schema declares extension types such as citext: the declaration wins.
                CustomType {
                    rust_name: "Citext".into(),
                    pg_name: "citext".into(),
                    pg_schema: Some("ext".into()),
                },
            ],
            ..Schema::default()
        };
        assert_eq!(
            pg_type_for(&named("Mood"), None, &schema).unwrap(),
            r#""mood""#
        );
        assert_eq!(
            pg_type_for(&named("OrderState"), None, &schema).unwrap(),
            r#""app"."Order ""State""""#
        );
        assert_eq!(
            pg_type_for(&array(named("Mood")), None, &schema).unwrap(),
            r#""mood"[]"#
        );
        assert_eq!(
            pg_type_for(&named("Citext"), None, &schema).unwrap(),
            r#""ext"."citext""#
        );
    }

    #[test]
    fn refuses_unknown_types() {
        let err = pg_type_for(&array(named("Tsvector")), None, &Schema::default()).unwrap_err();
        let SqlTypeError::Unknown { name } = &err;
        assert_eq!(name, "Tsvector");
        let message = err.to_string();
        assert!(
            message.starts_with("unknown SQL type `Tsvector`"),
            "{message}"
        );
        assert!(message.contains("sql_types"), "{message}");
    }

    #[test]
    fn canonicalises_aliases() {
        assert_eq!(canonical_name("Integer"), "Int4");
        assert_eq!(canonical_name("BigInt"), "Int8");
        assert_eq!(canonical_name("SmallInt"), "Int2");
        assert_eq!(canonical_name("Float"), "Float4");
        assert_eq!(canonical_name("Double"), "Float8");
        assert_eq!(canonical_name("VarChar"), "Varchar");
        assert_eq!(canonical_name("Decimal"), "Numeric");
        assert_eq!(canonical_name("Bytea"), "Binary");
        assert_eq!(canonical_name("Char"), "Bpchar");
        assert_eq!(canonical_name("Mood"), "Mood");
    }

    #[test]
    fn compares_types_across_aliases() {
        assert!(same_type(&named("Integer"), &named("Int4")));
        assert!(same_type(&array(named("BigInt")), &array(named("Int8"))));
        assert!(!same_type(&named("Int4"), &named("Int8")));
        assert!(!same_type(&array(named("Int4")), &named("Int4")));
    }

    #[test]
    fn recognises_widening() {
        let widening = [
            ("Int2", "Int4"),
            ("SmallInt", "BigInt"),
            ("Int2", "Numeric"),
            ("Integer", "Int8"),
            ("Int4", "Decimal"),
            ("Int8", "Numeric"),
            ("Float", "Double"),
            ("Varchar", "Text"),
            ("Char", "Text"),
        ];
        for (from, to) in widening {
            assert!(is_widening(&named(from), &named(to)), "{from} -> {to}");
        }
        assert!(is_widening(&array(named("Int4")), &array(named("Int8"))));
    }

    #[test]
    fn refuses_non_widening() {
        let not_widening = [
            ("Int4", "Int4"),
            ("Integer", "Int4"),
            ("Int8", "Int4"),
            ("Int4", "Int2"),
            ("Numeric", "Int8"),
            ("Float8", "Float4"),
            ("Int4", "Float8"),
            ("Float4", "Numeric"),
            ("Text", "Varchar"),
            ("Timestamp", "Timestamptz"),
            ("Timestamptz", "Timestamp"),
            ("Mood", "Text"),
        ];
        for (from, to) in not_widening {
            assert!(!is_widening(&named(from), &named(to)), "{from} -> {to}");
        }
        assert!(!is_widening(&named("Int4"), &array(named("Int8"))));
    }
}
