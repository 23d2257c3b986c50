//! The `filter = "…"` predicate: the one piece of SQL a user writes in the attribute. It is not
//! pasted into triggers as is: it is tokenized, anything that could end or comment out the
//! statement is refused, and every column reference is checked against the owner table and
//! rewritten to name the row it must read (`NEW."street1"` in a trigger, `o."street1"` in a query).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Space(String),
    /// A bare word: keyword, function name, type name or column.
    Word(String),
    /// `"Quoted Name"`, unescaped.
    QuotedIdent(String),
    /// `'text'`, as written (quotes included).
    Literal(String),
    Number(String),
    Punct(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FilterError {}

impl FilterError {
    /// The same error worded for swap's cast expressions (`price: Numeric = "…"`), which share
    /// the filter's tokenizer and column check but are not filters.
    pub fn for_expression(&self) -> FilterError {
        let mut text = self.0.clone();
        for (filter, expression) in [
            ("the filter is empty", "the expression is empty"),
            (
                "a filter is one boolean expression",
                "the expression computes one value",
            ),
            ("in a filter", "in the expression"),
            ("in the filter", "in the expression"),
            (
                "the filter reads the owner's row",
                "the expression reads the row being moved",
            ),
            ("the owner table has", "the table has"),
        ] {
            text = text.replace(filter, expression);
        }
        FilterError(text)
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(message.into()))
}

/// Splits the predicate into tokens, refusing what has no place in a row predicate.
pub fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    if text.trim().is_empty() {
        return err("the filter is empty");
    }
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            tokens.push(Token::Space(chars[start..i].iter().collect()));
        } else if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            if chars.get(i) == Some(&'\'') {
                return err("prefixed string literals (E'…', U&'…', B'…') are not accepted; use a plain '…' literal");
            }
            tokens.push(Token::Word(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            tokens.push(Token::Number(chars[start..i].iter().collect()));
        } else if c == '\'' || c == '"' {
            let mut value = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return err(format!(
                            "unterminated {} starting at character {}",
                            if c == '"' { "quoted name" } else { "string" },
                            start + 1
                        ))
                    }
                    Some(&q) if q == c && chars.get(i + 1) == Some(&c) => {
                        value.push(c);
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        value.push(other);
                        i += 1;
                    }
                }
            }
            if c == '"' {
                tokens.push(Token::QuotedIdent(value));
            } else {
                tokens.push(Token::Literal(chars[start..i].iter().collect()));
            }
        } else if c == ';' {
            return err("`;` would end the statement: a filter is one boolean expression");
        } else if c == '$' || c == '\\' || c == '?' {
            return err(format!(
                "`{c}` is not accepted in a filter (no parameters, no dollar quoting)"
            ));
        } else if (c == '-' && chars.get(i + 1) == Some(&'-'))
            || (c == '/' && chars.get(i + 1) == Some(&'*'))
        {
            return err("comments are not accepted in a filter");
        } else if "()<>=!+-*/%|&~^,.:[]#@".contains(c) {
            if c == '(' {
                depth += 1;
            } else if c == ')' {
                depth -= 1;
                if depth < 0 {
                    return err(format!("unbalanced `)` at character {}", i + 1));
                }
            }
            i += 1;
            tokens.push(Token::Punct(c.to_string()));
        } else {
            return err(format!("unexpected character `{c}`"));
        }
    }
    if depth != 0 {
        return err("unbalanced parentheses");
    }
    Ok(tokens)
}

/// Words that are never a column in an expression: PostgreSQL's reserved keywords and the
/// operator-like ones (`IS`, `LIKE`, `ISNULL`…), which the grammar fixes, plus the few
/// unreserved words the expression grammar gives a meaning of their own where they stand
/// (`AT TIME ZONE`, `IS UNKNOWN`, `ESCAPE`, `OVER (PARTITION BY …)`). This list only says what a
/// word *is*; whether the expression may run is PostgreSQL's to say (see [`Filter::check_sql`]).
const KEYWORDS: &[&str] = &[
    // Reserved.
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "system_user",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
    // Reserved, but allowed as a function or type name.
    "authorization",
    "binary",
    "collation",
    "concurrently",
    "cross",
    "current_schema",
    "freeze",
    "full",
    "ilike",
    "inner",
    "is",
    "isnull",
    "join",
    "left",
    "like",
    "natural",
    "notnull",
    "outer",
    "overlaps",
    "right",
    "similar",
    "tablesample",
    "verbose",
    // Unreserved, with a meaning of their own inside an expression.
    "at",
    "between",
    "by",
    "escape",
    "interval",
    "partition",
    "time",
    "unknown",
    "zone",
];

/// Words that continue a type name: `double precision`, `character varying`,
/// `timestamp(3) with time zone`, `interval day to second`.
const TYPE_WORDS: &[&str] = &[
    "precision",
    "varying",
    "with",
    "without",
    "time",
    "zone",
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "second",
    "to",
];

/// The fields `extract(field from …)` takes, and that may follow an `interval '…'` literal.
const FIELD_AFTER_INTERVAL: &[&str] = &["year", "month", "day", "hour", "minute", "second", "to"];

/// What a piece of the row's SQL is for: the check PostgreSQL runs on it differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowSql {
    /// `filter = "…"`: a boolean over the owner's row.
    Filter,
    /// A swap's `column: Type = "…"`: a value computed from the row being moved.
    Expression,
}

impl RowSql {
    fn noun(self) -> &'static str {
        match self {
            RowSql::Filter => "the filter",
            RowSql::Expression => "the expression",
        }
    }
}

/// A filter checked against the owner table: every column it reads is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    tokens: Vec<Token>,
    /// For each token, the column it reads (its SQL name), when it is a column reference.
    reads: Vec<Option<String>>,
    /// SQL names of the owner columns it reads, in order of first use.
    pub columns: Vec<String>,
}

fn lower(token: &Token) -> Option<String> {
    match token {
        Token::Word(word) => Some(word.to_ascii_lowercase()),
        _ => None,
    }
}

fn is_punct(token: Option<&Token>, s: &str) -> bool {
    matches!(token, Some(Token::Punct(p)) if p == s)
}

fn is_name(token: Option<&Token>) -> bool {
    matches!(token, Some(Token::Word(_) | Token::QuotedIdent(_)))
}

fn is_word_in(token: Option<&Token>, words: &[&str]) -> bool {
    lower_opt(token).is_some_and(|w| words.contains(&w.as_str()))
}

fn lower_opt(token: Option<&Token>) -> Option<String> {
    token.and_then(lower)
}

/// Marks the names of the significant tokens (`sig`, indices into it) that are not column
/// references: function names, type names, collations, `extract` fields, field selections.
fn not_columns(sig: &[&Token]) -> Vec<bool> {
    let mut skip = vec![false; sig.len()];
    let at = |i: usize| sig.get(i).copied();
    let mut i = 0;
    while i < sig.len() {
        let token = sig[i];
        // `x::type …`, `CAST(x AS type …)`: the type name, qualified, with its continuation
        // words; a typmod `(3)` holds numbers only.
        let cast_here = (is_punct(Some(token), ":") && is_punct(at(i + 1), ":"))
            .then_some(i + 2)
            .or_else(|| (lower(token).as_deref() == Some("as")).then_some(i + 1));
        if let Some(mut j) = cast_here {
            if is_name(at(j)) {
                skip[j] = true;
                while is_punct(at(j + 1), ".") && is_name(at(j + 2)) {
                    skip[j + 2] = true;
                    j += 2;
                }
                j += 1;
                loop {
                    if is_word_in(at(j), TYPE_WORDS) {
                        skip[j] = true;
                        j += 1;
                    } else if is_punct(at(j), "(") {
                        while j < sig.len() && !is_punct(at(j), ")") {
                            j += 1;
                        }
                        j += 1;
                    } else if is_punct(at(j), "[") && is_punct(at(j + 1), "]") {
                        j += 2;
                    } else {
                        break;
                    }
                }
            }
            i = j.max(i + 1);
            continue;
        }
        match token {
            Token::Word(_) | Token::QuotedIdent(_) => {
                // A function call, possibly qualified: `lower(x)`, `pg_catalog.lower(x)`.
                if is_punct(at(i + 1), "(") {
                    skip[i] = true;
                }
                if is_punct(at(i + 1), ".") && is_name(at(i + 2)) && is_punct(at(i + 3), "(") {
                    skip[i] = true;
                    skip[i + 2] = true;
                }
                // A typed literal: `date '2020-01-01'`, `timestamp with time zone '…'`.
                let mut j = i + 1;
                while is_word_in(at(j), TYPE_WORDS) {
                    j += 1;
                }
                if matches!(at(j), Some(Token::Literal(_))) && !is_word_in(Some(token), KEYWORDS) {
                    skip[i..j].iter_mut().for_each(|s| *s = true);
                }
                // `extract(field from …)`.
                if lower(token).as_deref() == Some("extract")
                    && is_punct(at(i + 1), "(")
                    && is_name(at(i + 2))
                {
                    skip[i + 2] = true;
                }
                // `interval '1' day to second`.
                if lower(token).as_deref() == Some("interval")
                    && matches!(at(i + 1), Some(Token::Literal(_)))
                {
                    let mut j = i + 2;
                    while is_word_in(at(j), FIELD_AFTER_INTERVAL) {
                        skip[j] = true;
                        j += 1;
                    }
                }
                // `x COLLATE "C"`, `COLLATE pg_catalog."C"`.
                if lower(token).as_deref() == Some("collate") && is_name(at(i + 1)) {
                    skip[i + 1] = true;
                    if is_punct(at(i + 2), ".") && is_name(at(i + 3)) {
                        skip[i + 3] = true;
                    }
                }
            }
            // `(address).city`: a field of a composite value.
            Token::Punct(p) if p == ")" && is_punct(at(i + 1), ".") && is_name(at(i + 2)) => {
                skip[i + 2] = true;
            }
            _ => {}
        }
        i += 1;
    }
    skip
}

impl Filter {
    /// Checks the predicate's column references against `owner_columns` (SQL names).
    ///
    /// Which words are columns is read from the grammar's shape (calls, casts, typed literals,
    /// keywords); PostgreSQL then confirms the reading at generate time ([`Filter::check_sql`]),
    /// so a word read wrongly is an error there, never a different expression.
    pub fn resolve(text: &str, owner_columns: &[String]) -> Result<Filter, FilterError> {
        let tokens = tokenize(text)?;
        let positions: Vec<usize> = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| !matches!(t, Token::Space(_)))
            .map(|(i, _)| i)
            .collect();
        let sig: Vec<&Token> = positions.iter().map(|p| &tokens[*p]).collect();
        if sig
            .iter()
            .any(|t| is_word_in(Some(*t), &["select", "values", "table"]))
        {
            return err("a subquery reads other rows: the filter may read the owner's row alone");
        }
        let skip = not_columns(&sig);
        let mut reads = vec![None; tokens.len()];
        let mut columns: Vec<String> = Vec::new();
        for (i, token) in sig.iter().enumerate() {
            if skip[i] {
                continue;
            }
            let name = match token {
                Token::Word(word) => {
                    let lower = word.to_ascii_lowercase();
                    if KEYWORDS.contains(&lower.as_str()) {
                        continue;
                    }
                    lower
                }
                Token::QuotedIdent(name) => name.clone(),
                _ => continue,
            };
            let previous = i.checked_sub(1).map(|p| sig[p]);
            if is_punct(previous, ".") || is_punct(sig.get(i + 1).copied(), ".") {
                return err(format!(
                    "write `{name}` without a table name: the filter reads the owner's row"
                ));
            }
            if !owner_columns.contains(&name) {
                return err(format!(
                    "unknown column `{name}` in the filter; the owner table has {}",
                    owner_columns.join(", ")
                ));
            }
            reads[positions[i]] = Some(name.clone());
            if !columns.contains(&name) {
                columns.push(name);
            }
        }
        Ok(Filter {
            tokens,
            reads,
            columns,
        })
    }

    /// The predicate with every column reference read from `row` (`NEW`, `OLD`, `o`), wrapped in
    /// parentheses so it composes with `AND` / `NOT`. `row` is ours, never the user's.
    pub fn render(&self, row: &str) -> String {
        self.render_from(Some(row))
    }

    /// The expression with bare column references, as `ALTER COLUMN … USING` reads them.
    pub fn render_bare(&self) -> String {
        self.render_from(None)
    }

    fn render_from(&self, row: Option<&str>) -> String {
        let mut out = String::from("(");
        for (token, reads) in self.tokens.iter().zip(&self.reads) {
            match (reads, token) {
                (Some(column), _) => {
                    if let Some(row) = row {
                        out.push_str(row);
                        out.push('.');
                    }
                    out.push_str(&super::quote_ident(column));
                }
                (
                    None,
                    Token::Space(s)
                    | Token::Word(s)
                    | Token::Literal(s)
                    | Token::Number(s)
                    | Token::Punct(s),
                ) => out.push_str(s),
                (None, Token::QuotedIdent(name)) => out.push_str(&super::quote_ident(name)),
            }
        }
        out.push(')');
        out
    }

    /// The source as written, every token in place: what the user means, for PostgreSQL to
    /// compare with what zmig renders.
    fn as_written(&self) -> String {
        let mut out = String::from("(");
        for token in &self.tokens {
            match token {
                Token::Space(s)
                | Token::Word(s)
                | Token::Literal(s)
                | Token::Number(s)
                | Token::Punct(s) => out.push_str(s),
                Token::QuotedIdent(name) => out.push_str(&super::quote_ident(name)),
            }
        }
        out.push(')');
        out
    }

    /// The `DO` block that refuses, with nothing changed, SQL whose value does not depend on the
    /// row of `table` (quoted, qualified) alone. PostgreSQL decides: an index predicate (or an
    /// index expression) accepts only immutable operators and functions, no subquery, no
    /// aggregate and no window function, and says precisely which rule a refusal breaks. The
    /// test runs on an empty temporary copy of the table's columns and drops it, so it reads no
    /// row and leaves nothing behind. Every migration that embeds the SQL starts with it, as the
    /// database it runs on may define a function otherwise than the one `generate` asked.
    ///
    /// `migration` and `text` (the SQL as the attribute has it) only word the error.
    pub fn check_sql(&self, kind: RowSql, migration: &str, table: &str, text: &str) -> String {
        self.check_block(kind, migration, table, text, false)
    }

    /// What `generate` runs (in a transaction it rolls back): [`Filter::check_sql`], and whether
    /// zmig read the SQL's columns as PostgreSQL does. The expression rendered for a row must be
    /// the one written (both as index predicates, deparsed alike), and it must read nothing but
    /// that row (a function whose one parameter is the row, where a bare name would not resolve).
    pub fn generate_check_sql(
        &self,
        kind: RowSql,
        migration: &str,
        table: &str,
        text: &str,
    ) -> String {
        self.check_block(kind, migration, table, text, true)
    }

    fn check_block(
        &self,
        kind: RowSql,
        migration: &str,
        table: &str,
        text: &str,
        reading: bool,
    ) -> String {
        use super::quote_literal;
        const CHECK: &str = "zmig_row_check";
        let predicate = |sql: String| match kind {
            RowSql::Filter => sql,
            RowSql::Expression => format!("({sql} IS NULL)"),
        };
        let index = |name: &str, sql: String| match kind {
            RowSql::Filter => format!("CREATE INDEX {name} ON {CHECK} ((1)) WHERE {sql};"),
            RowSql::Expression => format!("CREATE INDEX {name} ON {CHECK} (({sql} IS NULL));"),
        };
        let noun = kind.noun();
        let mut body = format!(
            "    CREATE TEMP TABLE {CHECK} (LIKE {table}) ON COMMIT DROP;\n    \
             BEGIN\n        \
                 {}\n    \
             EXCEPTION WHEN OTHERS THEN\n        \
                 RAISE EXCEPTION 'zmig %: % `%` must depend on the row alone, and PostgreSQL says: %', {}, {}, {}, SQLERRM\n            \
                     USING ERRCODE = SQLSTATE, HINT = {};\n    \
             END;\n",
            index("zmig_row_check_as_run", self.render_bare()),
            quote_literal(migration),
            quote_literal(noun),
            quote_literal(text),
            quote_literal(&format!(
                "{noun} may use the row's columns, constants and immutable operators and functions only, \
                 with no subquery, aggregate or window function: it is evaluated by triggers, batches and \
                 verify at different times and must give the same answer each time"
            )),
        );
        if reading {
            // `detail` is SQL: PostgreSQL's own words (`SQLERRM`), or none.
            let wrong = |how: &str, detail: &str| {
                format!(
                    "RAISE EXCEPTION 'zmig %: % `%`: zmig read its columns wrongly (%); quote column names (\"name\") to say which words are columns', {}, {}, {}, {} || {detail};",
                    quote_literal(migration),
                    quote_literal(noun),
                    quote_literal(text),
                    quote_literal(how),
                )
            };
            body.push_str(&format!(
                "    {}\n    \
                 {}\n    \
                 IF (SELECT count(DISTINCT pg_get_expr(coalesce(indpred, indexprs), indrelid)) FROM pg_index\n        \
                     WHERE indrelid = '{CHECK}'::regclass) <> 1 THEN\n        \
                     {}\n    \
                 END IF;\n    \
                 BEGIN\n        \
                     CREATE FUNCTION pg_temp.{CHECK}(zmig_row {CHECK}) RETURNS boolean LANGUAGE sql\n            \
                         RETURN {};\n    \
                 EXCEPTION WHEN OTHERS THEN\n        \
                     {}\n    \
                 END;\n    \
                 DROP FUNCTION pg_temp.{CHECK}({CHECK});\n",
                index("zmig_row_check_as_written", self.as_written()),
                index(
                    "zmig_row_check_as_rendered",
                    self.render(CHECK)
                ),
                wrong("rendered for a row it means something else", "''"),
                predicate(self.render("zmig_row")),
                wrong("some column is not read from the row", "': ' || SQLERRM"),
            ));
        }
        format!("DO $zmig$\nBEGIN\n{body}    DROP TABLE {CHECK};\nEND\n$zmig$;")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rewrites_columns_and_keeps_the_rest() {
        let filter = Filter::resolve(
            "street1 IS NOT NULL AND lower(\"State\") <> 'x''y' AND zip::text LIKE '0%'",
            &cols(&["street1", "State", "zip"]),
        )
        .unwrap();
        assert_eq!(filter.columns, cols(&["street1", "State", "zip"]));
        assert_eq!(
            filter.render("NEW"),
            "(NEW.\"street1\" IS NOT NULL AND lower(NEW.\"State\") <> 'x''y' AND NEW.\"zip\"::text LIKE '0%')"
        );
    }

    #[test]
    fn refuses_what_could_escape_the_expression() {
        for bad in [
            "a = 1; DROP TABLE x",
            "a = 1 -- c",
            "a /* c */",
            "a = $1",
            "(a = 1",
            "a = 1)",
            "'open",
            "E'x'",
        ] {
            assert!(Filter::resolve(bad, &cols(&["a"])).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_the_words_of_valid_sql_that_are_not_columns() {
        let columns = cols(&["opened_at", "zip", "city", "created_at", "year", "day"]);
        for (text, reads, rendered) in [
            (
                "extract(year from opened_at) = year",
                &["opened_at", "year"][..],
                "(extract(year from r.\"opened_at\") = r.\"year\")",
            ),
            (
                "substring(zip from 1 for 2) = '12'",
                &["zip"],
                "(substring(r.\"zip\" from 1 for 2) = '12')",
            ),
            (
                "trim(both ' ' from city) <> ''",
                &["city"],
                "(trim(both ' ' from r.\"city\") <> '')",
            ),
            (
                "created_at > '2020-01-01'::timestamp(3) with time zone AND day::double precision > 1",
                &["created_at", "day"],
                "(r.\"created_at\" > '2020-01-01'::timestamp(3) with time zone AND r.\"day\"::double precision > 1)",
            ),
            (
                "opened_at > timestamp '2020-01-01' + interval '1' day AND CAST(zip AS character varying) <> ''",
                &["opened_at", "zip"],
                "(r.\"opened_at\" > timestamp '2020-01-01' + interval '1' day AND CAST(r.\"zip\" AS character varying) <> '')",
            ),
            (
                "pg_catalog.lower(city COLLATE pg_catalog.\"C\") = 'x'",
                &["city"],
                "(pg_catalog.lower(r.\"city\" COLLATE pg_catalog.\"C\") = 'x')",
            ),
        ] {
            let filter = Filter::resolve(text, &columns).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(filter.columns, cols(reads), "{text}");
            assert_eq!(filter.render("r"), rendered, "{text}");
        }
    }

    #[test]
    fn refuses_a_subquery() {
        let error = Filter::resolve("EXISTS (SELECT 1 FROM caterers)", &cols(&["a"])).unwrap_err();
        assert!(error.0.contains("subquery"), "{error}");
    }

    #[test]
    fn refuses_unknown_and_qualified_columns() {
        assert!(Filter::resolve("stret1 IS NULL", &cols(&["street1"]))
            .unwrap_err()
            .0
            .contains("unknown column `stret1`"));
        assert!(
            Filter::resolve("caterers.street1 IS NULL", &cols(&["street1", "caterers"])).is_err()
        );
    }
}
