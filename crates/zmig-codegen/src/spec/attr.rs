//! The grammar of `#[zmig(...)]` (and the parts of `#[diesel(...)]` zmig reads), turned into a
//! [`ModelSpec`]. Every error is collected in a [`Ctxt`] and spanned on the offending tokens;
//! each message ends with the form that would have been accepted. A mistake in one part never
//! hides the rest of the attribute, and never produces follow-up errors about parts the user did
//! write.

use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Attribute, DeriveInput, Ident, LitStr, Token};

use super::valid;
use super::{
    Ctxt, ExtractSpec, MigrationSpec, ModelSpec, MovedColumnSpec, Spanned, Stage, SyncMode,
};

/// The whole attribute, as a user would copy it.
pub(crate) const ZMIG_FORMAT: &str =
    "#[zmig(extract(into = addresses, columns(street1, city)), stage = \"expand\")]";
/// `extract(...)` with every key, required ones first.
const EXTRACT_FORMAT: &str = "extract(into = addresses, columns(street1, gh_login as login, visits: Int8), \
     key = caterer_id, primary_key = id, filter = \"street1 IS NOT NULL\", name = caterers_addresses, \
     sync = trigger, model = Address)";
const COLUMNS_FORMAT: &str = "columns(street1, gh_login as login, visits: Int8)";
const EXTRACT_KEYS: [&str; 8] = [
    "into",
    "columns",
    "key",
    "primary_key",
    "filter",
    "name",
    "sync",
    "model",
];

/// Parses and validates the attributes of a struct deriving `Zmig`.
pub fn parse_model(input: &DeriveInput) -> Result<ModelSpec, syn::Error> {
    match &input.data {
        syn::Data::Struct(_) => parse_model_attrs(&input.ident, &input.attrs),
        syn::Data::Enum(e) => Err(syn::Error::new(
            e.enum_token.span,
            "#[derive(Zmig)] goes on the Diesel model struct of the table, not on an enum",
        )),
        syn::Data::Union(u) => Err(syn::Error::new(
            u.union_token.span,
            "#[derive(Zmig)] goes on the Diesel model struct of the table, not on a union",
        )),
    }
}

/// Parses and validates `#[zmig]` and `#[diesel]` attributes of the struct named `ident`; the
/// xtask calls this on structs it finds in the crate's sources, the derive through [`parse_model`].
pub fn parse_model_attrs(ident: &Ident, attrs: &[Attribute]) -> Result<ModelSpec, syn::Error> {
    let mut cx = Ctxt::new();
    let diesel = parse_diesel_attrs(attrs);
    let zmig = parse_zmig_attrs(&mut cx, attrs);

    let struct_name = Spanned::new(ident.unraw().to_string(), ident.span());
    if diesel.table_name.is_none() {
        cx.error_at(
            ident.span(),
            format!(
                "#[derive(Zmig)] needs the Diesel table this model maps to; zmig does not guess it from the struct name\n\
                 help: add `#[diesel(table_name = {})]` to the struct",
                diesel_default_table_name(&struct_name.value)
            ),
        );
    }
    match &zmig.first_attr {
        None => cx.error_at(
            ident.span(),
            format!(
                "#[derive(Zmig)] needs a #[zmig(...)] attribute saying what to migrate\n\
                 help: the correct format looks like `{ZMIG_FORMAT}`"
            ),
        ),
        // Whatever was wrong inside the attribute has been reported already; "missing" errors on
        // top would contradict what the user can see they wrote.
        Some(_) if zmig.broken => {}
        Some(attr) => {
            if zmig.migration.is_none() {
                cx.error_spanned_by(
                    attr,
                    format!("#[zmig] needs a strategy\nhelp: the correct format looks like `{ZMIG_FORMAT}`"),
                );
            }
            if zmig.stage.is_none() {
                cx.error_spanned_by(
                    attr,
                    format!(
                        "#[zmig] needs the stage the code is at\nhelp: add `stage = \"expand\"`; the stages, in order, are {}",
                        stage_list()
                    ),
                );
            }
        }
    }

    let (Some(table_path), Some(migration), Some(stage)) =
        (diesel.table_name, zmig.migration, zmig.stage)
    else {
        cx.check()?;
        unreachable!("a missing part always records an error");
    };
    let primary_key = diesel
        .primary_key
        .unwrap_or_else(|| vec![Spanned::new("id".to_owned(), ident.span())]);
    let spec = ModelSpec {
        struct_name,
        table_path,
        primary_key,
        migration,
        stage,
    };
    valid::check_model(&mut cx, &spec);
    cx.check()?;
    Ok(spec)
}

/// The table name Diesel infers for a struct: snake case, plus `s`.
fn diesel_default_table_name(struct_name: &str) -> String {
    let mut out = String::new();
    for (i, c) in struct_name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out.push('s');
    out
}

/// What zmig reads of `#[diesel(...)]`; everything else there is Diesel's business.
#[derive(Default)]
struct DieselAttrs {
    table_name: Option<Spanned<Vec<String>>>,
    primary_key: Option<Vec<Spanned<String>>>,
}

fn parse_diesel_attrs(attrs: &[Attribute]) -> DieselAttrs {
    let mut out = DieselAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("diesel")) {
        let result = attr.parse_nested_meta(|meta| {
            // #[diesel(table_name = crate::schema::caterers)]
            if meta.path.is_ident("table_name") {
                let path: syn::Path = meta.value()?.parse()?;
                let segments = path
                    .segments
                    .iter()
                    .map(|s| s.ident.unraw().to_string())
                    .collect();
                out.table_name = Some(Spanned::new(segments, path.span()));
            // #[diesel(primary_key(id))]
            } else if meta.path.is_ident("primary_key") {
                let content;
                syn::parenthesized!(content in meta.input);
                let idents = Punctuated::<Ident, Token![,]>::parse_terminated_with(
                    &content,
                    Ident::parse_any,
                )?;
                out.primary_key = Some(
                    idents
                        .iter()
                        .map(|i| Spanned::new(i.unraw().to_string(), i.span()))
                        .collect(),
                );
            } else {
                skip_meta_value(&meta)?;
            }
            Ok(())
        });
        // A malformed #[diesel] attribute is Diesel's to report; reporting it twice helps nobody.
        drop(result);
    }
    out
}

/// What `#[zmig(...)]` said, before the cross-checks.
#[derive(Default)]
struct ZmigAttrs<'a> {
    first_attr: Option<&'a Attribute>,
    /// Some part was malformed and has been reported.
    broken: bool,
    migration: Option<MigrationSpec>,
    stage: Option<Spanned<Stage>>,
}

fn parse_zmig_attrs<'a>(cx: &mut Ctxt, attrs: &'a [Attribute]) -> ZmigAttrs<'a> {
    let mut out = ZmigAttrs::default();
    let mut stage_seen = false;
    let mut strategy_seen = false;
    for attr in attrs.iter().filter(|a| a.path().is_ident("zmig")) {
        out.first_attr.get_or_insert(attr);
        if let syn::Meta::Path(path) = &attr.meta {
            cx.error_spanned_by(
                path,
                format!(
                    "#[zmig] needs arguments\nhelp: the correct format looks like `{ZMIG_FORMAT}`"
                ),
            );
            out.broken = true;
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            // extract(into = addresses, columns(street1, city), ...)
            if meta.path.is_ident("extract") {
                if strategy_seen {
                    cx.error_spanned_by(&meta.path, "duplicate strategy: one #[derive(Zmig)] model has one migration");
                }
                strategy_seen = true;
                match parse_extract(cx, &meta)? {
                    Some(extract) if out.migration.is_none() => out.migration = Some(MigrationSpec::Extract(extract)),
                    Some(_) => {}
                    None => out.broken = true,
                }
            // stage = "dual_write"
            } else if meta.path.is_ident("stage") {
                let lit: LitStr = meta.value()?.parse()?;
                if stage_seen {
                    cx.error_spanned_by(&meta.path, "duplicate `stage`: the code is at one stage");
                }
                stage_seen = true;
                match parse_stage(cx, &lit) {
                    Some(stage) if out.stage.is_none() => out.stage = Some(Spanned::new(stage, lit.span())),
                    Some(_) => {}
                    None => out.broken = true,
                }
            } else {
                skip_meta_value(&meta)?;
                let key = path_text(&meta.path);
                let hint = suggest(&key, &["extract", "stage"]).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                cx.error_spanned_by(
                    &meta.path,
                    format!(
                        "unknown zmig key `{key}`{hint}; expected `extract(...)` or `stage = \"...\"`\nhelp: the correct format looks like `{ZMIG_FORMAT}`"
                    ),
                );
                out.broken = true;
            }
            Ok(())
        });
        if let Err(error) = result {
            cx.syn_error(with_help(error, ZMIG_FORMAT));
            out.broken = true;
        }
    }
    out
}

fn parse_stage(cx: &mut Ctxt, lit: &LitStr) -> Option<Stage> {
    let text = lit.value();
    if let Some(stage) = Stage::parse(&text) {
        return Some(stage);
    }
    let names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
    let hint = suggest(&text, &names)
        .map(|s| format!("\nhelp: did you mean `stage = \"{s}\"`?"))
        .unwrap_or_default();
    cx.error_spanned_by(
        lit,
        format!(
            "unknown stage `{text}`; the stages, in order, are {}{hint}",
            stage_list()
        ),
    );
    None
}

fn stage_list() -> String {
    Stage::ALL
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `extract(...)`; `None` when a required part is missing (already reported).
fn parse_extract(cx: &mut Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<ExtractSpec>> {
    let mut into = None;
    let mut name = None;
    let mut key = None;
    let mut primary_key = None;
    let mut columns: Option<Vec<MovedColumnSpec>> = None;
    let mut filter = None;
    let mut sync: Option<Spanned<SyncMode>> = None;
    let mut model = None;
    let mut broken = false;
    let extract_path = meta.path.clone();
    let help = format!("help: the correct format looks like `{EXTRACT_FORMAT}`");

    meta.parse_nested_meta(|inner| {
        let slot = if inner.path.is_ident("into") {
            // into = addresses | into = "Addresses"
            Some(&mut into)
        } else if inner.path.is_ident("name") {
            // name = caterers_addresses
            Some(&mut name)
        } else if inner.path.is_ident("key") {
            // key = caterer_id
            Some(&mut key)
        } else if inner.path.is_ident("primary_key") {
            // primary_key = id | caterer_id | <moved column>
            Some(&mut primary_key)
        } else if inner.path.is_ident("model") {
            // model = Address
            Some(&mut model)
        } else {
            None
        };
        if let Some(slot) = slot {
            let value = parse_name_value(&inner)?;
            if slot.is_some() {
                cx.error_spanned_by(&inner.path, format!("duplicate `{}`", path_text(&inner.path)));
            } else {
                *slot = Some(value);
            }
        // columns(street1, gh_login as login, visits: Int8)
        } else if inner.path.is_ident("columns") {
            if !inner.input.peek(syn::token::Paren) {
                cx.error_spanned_by(
                    &inner.path,
                    format!("expected the moved columns in parentheses\nhelp: the correct format looks like `{COLUMNS_FORMAT}`"),
                );
                skip_meta_value(&inner)?;
                broken = true;
                return Ok(());
            }
            let content;
            syn::parenthesized!(content in inner.input);
            match Punctuated::<ColumnEntry, Token![,]>::parse_terminated(&content) {
                Ok(parsed) if columns.is_some() => {
                    drop(parsed);
                    cx.error_spanned_by(&inner.path, "duplicate `columns(...)`: list every moved column in one");
                }
                Ok(parsed) => columns = Some(parsed.into_iter().map(|e| e.0).collect()),
                Err(error) => {
                    // Contained: the rest of the attribute is still read and checked.
                    cx.syn_error(error);
                    let _: TokenStream = content.parse()?;
                    broken = true;
                }
            }
        // sync = trigger | app
        } else if inner.path.is_ident("sync") {
            let value = parse_name_value(&inner)?;
            let mode = match value.value.as_str() {
                "trigger" => Some(SyncMode::Trigger),
                "app" => Some(SyncMode::App),
                _ => None,
            };
            match mode {
                None => cx.error_at(
                    value.span,
                    format!(
                        "unknown sync mode `{}`; expected `trigger` (the default: database triggers keep the new table in step) \
                         or `app` (generated wrappers do, in the application's transactions)\nhelp: `sync = trigger` or `sync = app`",
                        value.value
                    ),
                ),
                Some(_) if sync.is_some() => cx.error_spanned_by(&inner.path, "duplicate `sync`"),
                Some(mode) => sync = Some(Spanned::new(mode, value.span)),
            }
        // filter = "street1 IS NOT NULL"
        } else if inner.path.is_ident("filter") {
            let lit: LitStr = inner.value()?.parse()?;
            if filter.is_some() {
                cx.error_spanned_by(&inner.path, "duplicate `filter`");
            } else {
                filter = Some(Spanned::new(lit.value(), lit.span()));
            }
        } else {
            skip_meta_value(&inner)?;
            let key = path_text(&inner.path);
            let hint = match key.as_str() {
                "foreign_key" | "owner_key" => Some("key"),
                "table" | "to" | "new_table" => Some("into"),
                "where" | "condition" => Some("filter"),
                _ => suggest(&key, &EXTRACT_KEYS),
            }
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
            let keys = EXTRACT_KEYS.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
            cx.error_spanned_by(&inner.path, format!("unknown extract key `{key}`{hint}; expected one of {keys}\n{help}"));
        }
        Ok(())
    })?;

    if into.is_none() {
        cx.error_spanned_by(
            &extract_path,
            format!("extract needs the new table: `into = <table>`\n{help}"),
        );
    }
    if !broken && columns.as_ref().is_none_or(|c| c.is_empty()) {
        cx.error_spanned_by(
            &extract_path,
            format!("extract needs the columns to move: `{COLUMNS_FORMAT}`\n{help}"),
        );
    }
    match (into, columns) {
        (Some(into), Some(columns)) if !broken && !columns.is_empty() => Ok(Some(ExtractSpec {
            into,
            name,
            key,
            primary_key,
            columns,
            filter,
            sync,
            model,
        })),
        _ => Ok(None),
    }
}

/// `= ident` or `= "string"`; raw identifiers lose their `r#`.
fn parse_name_value(meta: &ParseNestedMeta) -> syn::Result<Spanned<String>> {
    let input = meta.value()?;
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        Ok(Spanned::new(lit.value(), lit.span()))
    } else {
        let ident = Ident::parse_any(input).map_err(|e| {
            syn::Error::new(
                e.span(),
                format!(
                    "expected a name after `{} =`, like `addresses` or `\"Addresses\"`",
                    path_text(&meta.path)
                ),
            )
        })?;
        Ok(Spanned::new(ident.unraw().to_string(), ident.span()))
    }
}

/// One entry of `columns(...)`: `source [as target] [: SqlType]`.
struct ColumnEntry(MovedColumnSpec);

impl Parse for ColumnEntry {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let source = Ident::parse_any(input).map_err(|e| {
            syn::Error::new(e.span(), format!("expected a column name\nhelp: the correct format looks like `{COLUMNS_FORMAT}`"))
        })?;
        let rename = if input.peek(Token![as]) {
            input.parse::<Token![as]>()?;
            if input.peek(LitStr) {
                let lit: LitStr = input.parse()?;
                Some(Spanned::new(lit.value(), lit.span()))
            } else {
                let ident = Ident::parse_any(input).map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        format!("expected the column's new name after `{source} as`"),
                    )
                })?;
                Some(Spanned::new(ident.unraw().to_string(), ident.span()))
            }
        } else {
            None
        };
        let widen = if input.peek(Token![:]) {
            input.parse::<Token![:]>()?;
            let path: syn::Path = input.parse()?;
            let last = path
                .segments
                .last()
                .map(|s| s.ident.to_string())
                .unwrap_or_default();
            Some(Spanned::new(last, path.span()))
        } else {
            None
        };
        if !input.is_empty() && !input.peek(Token![,]) {
            let unexpected: proc_macro2::TokenTree = input.fork().parse()?;
            return Err(input.error(format!(
                "unexpected `{unexpected}` after column `{source}`\nhelp: each column looks like `name`, `name as new_name` or `name: Int8`"
            )));
        }
        Ok(ColumnEntry(MovedColumnSpec {
            source: Spanned::new(source.unraw().to_string(), source.span()),
            rename,
            widen,
        }))
    }
}

/// Consumes `= <expr>` or `(...)` after a key we do not know, so parsing can go on and report
/// every other mistake in the same compile.
fn skip_meta_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        let _: TokenStream = content.parse()?;
    }
    Ok(())
}

fn path_text(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// Adds the correct syntax to a bare syn parse error.
fn with_help(error: syn::Error, format: &str) -> syn::Error {
    let mut out: Option<syn::Error> = None;
    for single in error {
        let text = single.to_string();
        let text = if text.contains("help:") {
            text
        } else {
            format!("{text}\nhelp: the correct format looks like `{format}`")
        };
        let single = syn::Error::new(single.span(), text);
        match &mut out {
            Some(all) => all.combine(single),
            None => out = Some(single),
        }
    }
    out.expect("a syn::Error holds at least one error")
}

/// The closest of `known` to `word`, if close enough to be a likely typo.
fn suggest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .min_by_key(|(d, _)| *d)
        .filter(|(d, k)| *d <= 3.min(k.len() / 2 + 1))
        .map(|(_, k)| k)
}

/// Levenshtein distance, for "did you mean" on short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_diesel_table_names_for_the_hint() {
        assert_eq!(diesel_default_table_name("Caterer"), "caterers");
        assert_eq!(diesel_default_table_name("OrderItem"), "order_items");
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(suggest("colums", &EXTRACT_KEYS), Some("columns"));
        assert_eq!(
            suggest("dual_wirte", &["expand", "dual_write"]),
            Some("dual_write")
        );
        assert_eq!(suggest("zzz", &EXTRACT_KEYS), None);
    }
}
