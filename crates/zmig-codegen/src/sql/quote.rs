//! Quoting: every identifier and literal that reaches generated SQL passes through here.

/// `"name"` with embedded quotes doubled: safe for any identifier, keeps case and reserved words.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A possibly schema-qualified name: `"schema"."name"`.
pub fn quote_qualified(schema: Option<&str>, name: &str) -> String {
    match schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
        None => quote_ident(name),
    }
}

/// `'text'` with embedded quotes doubled (standard_conforming_strings is on since PostgreSQL 9.1).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_embedded_quotes() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_qualified(Some("App"), "user"), r#""App"."user""#);
    }
}
