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

/// Words that are never column names in a predicate.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "is",
    "null",
    "true",
    "false",
    "unknown",
    "in",
    "like",
    "ilike",
    "similar",
    "to",
    "between",
    "symmetric",
    "distinct",
    "from",
    "any",
    "all",
    "some",
    "case",
    "when",
    "then",
    "else",
    "end",
    "cast",
    "as",
    "escape",
    "collate",
    "at",
    "time",
    "zone",
    "interval",
    "current_date",
    "current_timestamp",
    "localtimestamp",
    "current_time",
    "localtime",
    "array",
    "isnull",
    "notnull",
];

/// A filter checked against the owner table: every column it reads is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    tokens: Vec<Token>,
    /// SQL names of the owner columns it reads, in order of first use.
    pub columns: Vec<String>,
}

impl Filter {
    /// Checks the predicate's column references against `owner_columns` (SQL names).
    pub fn resolve(text: &str, owner_columns: &[String]) -> Result<Filter, FilterError> {
        let tokens = tokenize(text)?;
        let mut columns: Vec<String> = Vec::new();
        let significant: Vec<&Token> = tokens
            .iter()
            .filter(|t| !matches!(t, Token::Space(_)))
            .collect();
        for (i, token) in significant.iter().enumerate() {
            let previous = i.checked_sub(1).map(|p| significant[p]);
            let next = significant.get(i + 1).copied();
            let after_cast = matches!(previous, Some(Token::Punct(p)) if p == ":")
                && i >= 2
                && matches!(significant[i - 2], Token::Punct(p) if p == ":");
            let name = match token {
                Token::Word(word) => {
                    let lower = word.to_ascii_lowercase();
                    if after_cast
                        || KEYWORDS.contains(&lower.as_str())
                        || matches!(next, Some(Token::Punct(p)) if p == "(")
                    {
                        continue;
                    }
                    lower
                }
                Token::QuotedIdent(name) if !after_cast => name.clone(),
                _ => continue,
            };
            if matches!(previous, Some(Token::Punct(p)) if p == ".")
                || matches!(next, Some(Token::Punct(p)) if p == ".")
            {
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
            if !columns.contains(&name) {
                columns.push(name);
            }
        }
        Ok(Filter { tokens, columns })
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
        let significant: Vec<usize> = self
            .tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| !matches!(t, Token::Space(_)))
            .map(|(i, _)| i)
            .collect();
        for (position, token) in self.tokens.iter().enumerate() {
            let column = match token {
                Token::Word(word)
                    if self.columns.contains(&word.to_ascii_lowercase())
                        && !self.is_call_or_cast(&significant, position) =>
                {
                    Some(word.to_ascii_lowercase())
                }
                Token::QuotedIdent(name)
                    if self.columns.contains(name)
                        && !self.is_call_or_cast(&significant, position) =>
                {
                    Some(name.clone())
                }
                _ => None,
            };
            match (column, token) {
                (Some(column), _) => {
                    if let Some(row) = row {
                        out.push_str(row);
                        out.push('.');
                    }
                    out.push_str(&super::quote_ident(&column));
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

    /// Whether the word at `position` is a function name or a type after `::`, not a column.
    fn is_call_or_cast(&self, significant: &[usize], position: usize) -> bool {
        let Some(index) = significant.iter().position(|p| *p == position) else {
            return false;
        };
        let at = |i: usize| significant.get(i).map(|p| &self.tokens[*p]);
        let punct = |t: Option<&Token>, s: &str| matches!(t, Some(Token::Punct(p)) if p == s);
        punct(at(index + 1), "(")
            || (index >= 2 && punct(at(index - 1), ":") && punct(at(index - 2), ":"))
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
