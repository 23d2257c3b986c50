//! The grammar of `#[zmig(...)]` (and the parts of `#[diesel(...)]` zmig reads), turned into a
//! [`ModelSpec`]. Every error is collected in a [`Ctxt`] and spanned on the offending tokens;
//! each message ends with the form that would have been accepted.

use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Attribute, DeriveInput, Ident, LitStr, Token};

use super::valid;
use super::{Ctxt, ExtractSpec, MigrationSpec, ModelSpec, MovedColumnSpec, Spanned, Stage};

/// The whole attribute, as a user would copy it.
pub(crate) const ZMIG_FORMAT: &str =
    "#[zmig(extract(into = addresses, columns(street1, city)), stage = \"expand\")]";
pub(crate) const EXTRACT_KEYS: &str = "into, columns, key, primary_key, filter, name";

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
    let table_path = match diesel.table_name {
        Some(path) => Some(path),
        None => {
            cx.error_at(
                ident.span(),
                "#[derive(Zmig)] needs the Diesel table this model maps to\n\
                 help: add `#[diesel(table_name = caterers)]` to the struct, as Selectable and Insertable need too",
            );
            None
        }
    };
    let migration = match zmig.migration {
        Some(migration) => Some(migration),
        None if zmig.seen => {
            cx.error_at(
                zmig.first_span.unwrap_or_else(|| ident.span()),
                format!(
                    "#[zmig] needs a strategy\nhelp: the correct format looks like `{ZMIG_FORMAT}`"
                ),
            );
            None
        }
        None => {
            cx.error_at(
                ident.span(),
                format!("#[derive(Zmig)] needs a #[zmig(...)] attribute saying what to migrate\nhelp: the correct format looks like `{ZMIG_FORMAT}`"),
            );
            None
        }
    };
    let stage = match zmig.stage {
        Some(stage) => Some(stage),
        None => {
            if zmig.seen {
                cx.error_at(
                    zmig.first_span.unwrap_or_else(|| ident.span()),
                    format!(
                        "#[zmig] needs the stage the code is at\nhelp: add `stage = \"expand\"`; the stages are {}",
                        stage_list()
                    ),
                );
            }
            None
        }
    };

    let (Some(table_path), Some(migration), Some(stage)) = (table_path, migration, stage) else {
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
struct ZmigAttrs {
    seen: bool,
    first_span: Option<proc_macro2::Span>,
    migration: Option<MigrationSpec>,
    stage: Option<Spanned<Stage>>,
}

fn parse_zmig_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> ZmigAttrs {
    let mut out = ZmigAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("zmig")) {
        out.seen = true;
        out.first_span.get_or_insert_with(|| attr.span());
        if let syn::Meta::Path(path) = &attr.meta {
            cx.error_spanned_by(
                path,
                format!(
                    "#[zmig] needs arguments\nhelp: the correct format looks like `{ZMIG_FORMAT}`"
                ),
            );
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            // extract(into = addresses, columns(street1, city), ...)
            if meta.path.is_ident("extract") {
                let extract = parse_extract(cx, &meta)?;
                if out.migration.is_some() {
                    cx.error_spanned_by(&meta.path, "duplicate strategy: one #[derive(Zmig)] model has one migration");
                } else {
                    out.migration = Some(MigrationSpec::Extract(extract));
                }
            // stage = "dual_write"
            } else if meta.path.is_ident("stage") {
                let lit: LitStr = meta.value()?.parse()?;
                let stage = parse_stage(cx, &lit);
                if out.stage.is_some() {
                    cx.error_spanned_by(&meta.path, "duplicate `stage`");
                } else if let Some(stage) = stage {
                    out.stage = Some(Spanned::new(stage, lit.span()));
                }
            } else {
                skip_meta_value(&meta)?;
                let key = path_text(&meta.path);
                cx.error_spanned_by(
                    &meta.path,
                    format!(
                        "unknown zmig key `{key}`; expected `extract(...)` or `stage = \"...\"`\nhelp: the correct format looks like `{ZMIG_FORMAT}`"
                    ),
                );
            }
            Ok(())
        });
        if let Err(error) = result {
            if let Some(error) = with_help(error, ZMIG_FORMAT) {
                cx.syn_error(error);
            }
        }
    }
    out
}

fn parse_stage(cx: &mut Ctxt, lit: &LitStr) -> Option<Stage> {
    let text = lit.value();
    if let Some(stage) = Stage::parse(&text) {
        return Some(stage);
    }
    let suggestion = Stage::ALL
        .into_iter()
        .map(|s| (edit_distance(&text, s.as_str()), s))
        .min_by_key(|(d, _)| *d)
        .filter(|(d, _)| *d <= 3)
        .map(|(_, s)| format!("\nhelp: did you mean `stage = \"{s}\"`?"))
        .unwrap_or_default();
    cx.error_spanned_by(
        lit,
        format!(
            "unknown stage `{text}`; the stages, in order, are {}{suggestion}",
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

fn parse_extract(cx: &mut Ctxt, meta: &ParseNestedMeta) -> syn::Result<ExtractSpec> {
    let mut into = None;
    let mut name = None;
    let mut key = None;
    let mut primary_key = None;
    let mut columns: Option<Vec<MovedColumnSpec>> = None;
    let mut filter = None;
    let extract_span = meta.path.span();
    let help = "help: the correct format looks like `extract(into = addresses, columns(street1, street2, city))`";

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
        } else {
            None
        };
        if let Some(slot) = slot {
            let value = parse_name_value(&inner)?;
            if slot.is_some() {
                cx.error_spanned_by(
                    &inner.path,
                    format!("duplicate `{}`", path_text(&inner.path)),
                );
            } else {
                *slot = Some(value);
            }
        // columns(street1, gh_login as login, visits: Int8)
        } else if inner.path.is_ident("columns") {
            let content;
            syn::parenthesized!(content in inner.input);
            let parsed = Punctuated::<ColumnEntry, Token![,]>::parse_terminated(&content)?;
            if columns.is_some() {
                cx.error_spanned_by(
                    &inner.path,
                    "duplicate `columns(...)`: list every moved column in one",
                );
            } else {
                columns = Some(parsed.into_iter().map(|e| e.0).collect());
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
            cx.error_spanned_by(
                &inner.path,
                format!("unknown extract key `{key}`; expected one of {EXTRACT_KEYS}\n{help}"),
            );
        }
        Ok(())
    })?;

    let Some(into) = into else {
        cx.error_at(
            extract_span,
            format!("extract needs the new table: `into = <table>`\n{help}"),
        );
        return Err(missing_already_reported(extract_span));
    };
    let columns = match columns {
        Some(columns) if !columns.is_empty() => columns,
        Some(_) | None => {
            cx.error_at(
                extract_span,
                format!("extract needs the columns to move: `columns(a, b, ...)`\n{help}"),
            );
            return Err(missing_already_reported(extract_span));
        }
    };
    Ok(ExtractSpec {
        into,
        name,
        key,
        primary_key,
        columns,
        filter,
    })
}

/// The error for a part already reported through the context; `parse_zmig_attrs` drops it.
fn missing_already_reported(span: proc_macro2::Span) -> syn::Error {
    syn::Error::new(span, ALREADY_REPORTED)
}

const ALREADY_REPORTED: &str = "\u{0}zmig: already reported";

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
                    "expected a name after `{} =`, like `addresses`",
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
            syn::Error::new(
                e.span(),
                "expected a column name\nhelp: the correct format looks like `columns(street1, gh_login as login, visits: Int8)`",
            )
        })?;
        let rename = if input.peek(Token![as]) {
            input.parse::<Token![as]>()?;
            if input.peek(LitStr) {
                let lit: LitStr = input.parse()?;
                Some(Spanned::new(lit.value(), lit.span()))
            } else {
                let ident = Ident::parse_any(input)?;
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
            return Err(input.error(
                "unexpected tokens after the column\nhelp: each column looks like `name`, `name as new_name` or `name: Int8`",
            ));
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
        let _: proc_macro2::TokenStream = content.parse()?;
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

/// Adds the correct syntax to a bare syn parse error, and drops our "already reported" markers.
fn with_help(error: syn::Error, format: &str) -> Option<syn::Error> {
    let mut out: Option<syn::Error> = None;
    for single in error {
        let text = single.to_string();
        if text == ALREADY_REPORTED {
            continue;
        }
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
    out
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
