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
    Ctxt, ExtractSpec, MigrationSpec, ModelSpec, MovedColumnSpec, ReferenceSpec, RustTypeSpec,
    Spanned, Stage, SwapColumnSpec, SwapSpec, SyncMode, UniqueSpec,
};

/// The whole attribute, as a user would copy it.
pub(crate) const ZMIG_FORMAT: &str =
    "#[zmig(extract(into = addresses, columns(street1, city)), stage = \"expand\")]";
/// The whole attribute for a swap.
const ZMIG_SWAP_FORMAT: &str = "#[zmig(swap(columns(id: Int8)), stage = \"prepare\")]";
/// `extract(...)` with every key, required ones first (but `unique_key`, see [`NON_UNIQUE_FORMAT`]).
const EXTRACT_FORMAT: &str = "extract(into = addresses, columns(street1, gh_login as login, visits: Int8), \
     key = caterer_id, primary_key = id, filter = \"street1 IS NOT NULL\", name = caterers_addresses, \
     sync = trigger, model = Address, rust_types(login = String))";
/// `extract(...)` with a non-unique owner key: the primary key is a moved column.
pub(crate) const NON_UNIQUE_FORMAT: &str =
    "extract(into = accounts, key = user_id, primary_key = account_id, \
     unique_key = false, columns(account_id, account_name))";
const COLUMNS_FORMAT: &str = "columns(street1, gh_login as login, visits: Int8)";
/// `swap(...)` with every key, required ones first.
const SWAP_FORMAT: &str = "swap(columns(id: Int8, price: Numeric = \"round(price)::numeric\"), \
     references(trips.car_id), unique(vin), name = cars_bigint)";
const SWAP_COLUMNS_FORMAT: &str = "columns(id: Int8, price: Numeric = \"round(price)::numeric\")";
const SWAP_COLUMN_HELP: &str = "help: each column looks like `id: Int8` (a widening) or \
     `price: Numeric = \"round(price)::numeric\"` (any other change, computed from the old row)";
const REFERENCES_FORMAT: &str = "references(trips.car_id, invoices.car_id)";
const UNIQUE_FORMAT: &str = "unique(vin, (make, plate))";
const SWAP_KEYS: [&str; 4] = ["columns", "references", "unique", "name"];
const EXTRACT_KEYS: [&str; 10] = [
    "into",
    "columns",
    "key",
    "primary_key",
    "unique_key",
    "filter",
    "name",
    "sync",
    "model",
    "rust_types",
];
const RUST_TYPES_FORMAT: &str = "rust_types(balance = bigdecimal::BigDecimal, login = String)";

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
                "#[derive(Zmig)] needs a #[zmig(...)] attribute saying what to migrate\n{}",
                strategy_help()
            ),
        ),
        // Whatever was wrong inside the attribute has been reported already; "missing" errors on
        // top would contradict what the user can see they wrote.
        Some(_) if zmig.broken => {}
        Some(attr) => {
            if zmig.migration.is_none() {
                cx.error_spanned_by(
                    attr,
                    format!(
                        "#[zmig] needs a strategy: `extract(...)` or `swap(...)`\n{}",
                        strategy_help()
                    ),
                );
            }
            if zmig.stage.is_none() {
                let stages = zmig.strategy.map_or(&Stage::EXTRACT[..], Strategy::stages);
                cx.error_spanned_by(
                    attr,
                    format!(
                        "#[zmig] needs the stage the code is at\nhelp: add `stage = \"{}\"`; the stages, in order, are {}",
                        stages[0],
                        stage_list(stages)
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
    /// The first strategy named, even when what it holds was malformed: the stage is checked
    /// against its stages either way.
    strategy: Option<Strategy>,
    stage: Option<Spanned<Stage>>,
}

/// The strategy keywords of `#[zmig(...)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Extract,
    Swap,
}

impl Strategy {
    fn of(path: &syn::Path) -> Option<Strategy> {
        if path.is_ident("extract") {
            Some(Strategy::Extract)
        } else if path.is_ident("swap") {
            Some(Strategy::Swap)
        } else {
            None
        }
    }

    fn keyword(self) -> &'static str {
        match self {
            Strategy::Extract => "extract",
            Strategy::Swap => "swap",
        }
    }

    /// "an extract", "a swap".
    fn article(self) -> &'static str {
        match self {
            Strategy::Extract => "an extract",
            Strategy::Swap => "a swap",
        }
    }

    fn stages(self) -> &'static [Stage] {
        match self {
            Strategy::Extract => &Stage::EXTRACT,
            Strategy::Swap => &Stage::SWAP,
        }
    }

    fn of_stage(stage: Stage) -> Strategy {
        if Stage::SWAP.contains(&stage) {
            Strategy::Swap
        } else {
            Strategy::Extract
        }
    }
}

/// The help line when the strategy itself is what is missing or wrong.
fn strategy_help() -> String {
    format!("help: the correct format looks like `{ZMIG_FORMAT}` or `{ZMIG_SWAP_FORMAT}`")
}

fn parse_zmig_attrs<'a>(cx: &mut Ctxt, attrs: &'a [Attribute]) -> ZmigAttrs<'a> {
    let mut out = ZmigAttrs::default();
    let mut stage_lit: Option<LitStr> = None;
    // Two strategies named: which one the stage is for is anyone's guess, so any stage passes.
    let mut strategies_conflict = false;
    for attr in attrs.iter().filter(|a| a.path().is_ident("zmig")) {
        out.first_attr.get_or_insert(attr);
        if let syn::Meta::Path(path) = &attr.meta {
            cx.error_spanned_by(
                path,
                format!("#[zmig] needs arguments\n{}", strategy_help()),
            );
            out.broken = true;
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            // extract(into = addresses, columns(street1, city), ...)
            // swap(columns(id: Int8), references(trips.car_id), ...)
            if let Some(strategy) = Strategy::of(&meta.path) {
                match out.strategy {
                    Some(first) if first == strategy => cx.error_spanned_by(
                        &meta.path,
                        "duplicate strategy: one #[derive(Zmig)] model has one migration",
                    ),
                    Some(first) => {
                        strategies_conflict = true;
                        cx.error_spanned_by(
                            &meta.path,
                            format!(
                                "`{}(...)` and `{}(...)` on one model: one #[derive(Zmig)] model has one migration at a time\n\
                                 help: keep one strategy; start the other once this migration is done",
                                first.keyword(),
                                strategy.keyword()
                            ),
                        )
                    }
                    None => out.strategy = Some(strategy),
                }
                let parsed = match strategy {
                    Strategy::Extract => parse_extract(cx, &meta)?.map(|x| MigrationSpec::Extract(Box::new(x))),
                    Strategy::Swap => parse_swap(cx, &meta)?.map(MigrationSpec::Swap),
                };
                match parsed {
                    Some(migration) if out.migration.is_none() && out.strategy == Some(strategy) => {
                        out.migration = Some(migration)
                    }
                    Some(_) => {}
                    None => out.broken = true,
                }
            // stage = "dual_write"
            } else if meta.path.is_ident("stage") {
                let lit: LitStr = meta.value()?.parse()?;
                if stage_lit.is_some() {
                    cx.error_spanned_by(&meta.path, "duplicate `stage`: the code is at one stage");
                } else {
                    stage_lit = Some(lit);
                }
            } else {
                skip_meta_value(&meta)?;
                let key = path_text(&meta.path);
                let hint = suggest(&key, &["extract", "swap", "stage"]).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                cx.error_spanned_by(
                    &meta.path,
                    format!(
                        "unknown zmig key `{key}`{hint}; expected `extract(...)`, `swap(...)` or `stage = \"...\"`\n{}",
                        strategy_help()
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
    // The stage is checked once the strategy is known: it may come first in the attribute.
    if let Some(lit) = stage_lit {
        let strategy = out.strategy.filter(|_| !strategies_conflict);
        match parse_stage(cx, &lit, strategy) {
            Some(stage) => out.stage = Some(Spanned::new(stage, lit.span())),
            None => out.broken = true,
        }
    }
    out
}

/// The stage in `stage = "..."`, which must be one of `strategy`'s (any known one when the
/// strategy is missing: that is reported on its own).
fn parse_stage(cx: &mut Ctxt, lit: &LitStr, strategy: Option<Strategy>) -> Option<Stage> {
    let text = lit.value();
    let parsed = Stage::parse(&text);
    let Some(strategy) = strategy else {
        if parsed.is_none() {
            let names: Vec<&str> = Stage::EXTRACT
                .iter()
                .chain(&Stage::SWAP)
                .map(|s| s.as_str())
                .collect();
            let hint = suggest(&text, &names)
                .map(|s| format!("\nhelp: did you mean `stage = \"{s}\"`?"))
                .unwrap_or_default();
            cx.error_spanned_by(
                lit,
                format!(
                    "unknown stage `{text}`; an extract's stages, in order, are {}; a swap's are {}{hint}",
                    stage_list(&Stage::EXTRACT),
                    stage_list(&Stage::SWAP)
                ),
            );
        }
        return parsed;
    };
    let stages = strategy.stages();
    match parsed {
        Some(stage) if stages.contains(&stage) => Some(stage),
        Some(stage) => {
            cx.error_spanned_by(
                lit,
                format!(
                    "`{text}` is a stage of {}, not of {}; the stages of {}, in order, are {}\n\
                     help: {} starts at `stage = \"{}\"`",
                    Strategy::of_stage(stage).keyword(),
                    strategy.keyword(),
                    strategy.keyword(),
                    stage_list(stages),
                    strategy.article(),
                    stages[0]
                ),
            );
            None
        }
        None => {
            let names: Vec<&str> = stages.iter().map(|s| s.as_str()).collect();
            let hint = suggest(&text, &names)
                .map(|s| format!("\nhelp: did you mean `stage = \"{s}\"`?"))
                .unwrap_or_default();
            cx.error_spanned_by(
                lit,
                format!(
                    "unknown stage `{text}`; the stages, in order, are {}{hint}",
                    stage_list(stages)
                ),
            );
            None
        }
    }
}

fn stage_list(stages: &[Stage]) -> String {
    stages
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
    let mut unique_key: Option<Spanned<bool>> = None;
    let mut columns: Option<Vec<MovedColumnSpec>> = None;
    let mut filter = None;
    let mut sync: Option<Spanned<SyncMode>> = None;
    let mut model = None;
    let mut rust_types: Option<Vec<RustTypeSpec>> = None;
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
            let list = List {
                what: "the moved columns",
                format: COLUMNS_FORMAT,
                duplicate: "duplicate `columns(...)`: list every moved column in one",
            };
            match list.parse::<ColumnEntry>(cx, &inner, columns.is_some())? {
                Parsed::List(parsed) => columns = Some(parsed.into_iter().map(|e| e.0).collect()),
                Parsed::Duplicate => {}
                Parsed::Broken => broken = true,
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
        // rust_types(balance = bigdecimal::BigDecimal)
        } else if inner.path.is_ident("rust_types") {
            let parsed = parse_rust_types(&inner)?;
            if rust_types.is_some() {
                cx.error_spanned_by(&inner.path, "duplicate `rust_types(...)`: name every column's Rust type in one");
            } else {
                rust_types = Some(parsed);
            }
        // unique_key = false
        } else if inner.path.is_ident("unique_key") {
            let value: syn::Expr = inner.value()?.parse()?;
            match &value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Bool(_), .. }) if unique_key.is_some() => {
                    cx.error_spanned_by(&inner.path, "duplicate `unique_key`")
                }
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Bool(b), .. }) => {
                    unique_key = Some(Spanned::new(b.value, b.span()))
                }
                _ => cx.error_spanned_by(
                    &value,
                    format!(
                        "`unique_key` is `true` (the default: one row per owner) or `false` (an owner may have \
                         several rows)\nhelp: the correct format looks like `{NON_UNIQUE_FORMAT}`"
                    ),
                ),
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
                "unique" | "key_unique" | "unique_owner_key" => Some("unique_key"),
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
            unique_key,
            columns,
            filter,
            sync,
            model,
            rust_types: rust_types.unwrap_or_default(),
        })),
        _ => Ok(None),
    }
}

/// `rust_types(column = Type, ...)`, each type a Rust type as it would be written on a field.
fn parse_rust_types(meta: &ParseNestedMeta) -> syn::Result<Vec<RustTypeSpec>> {
    let help = format!("help: the correct format looks like `{RUST_TYPES_FORMAT}`");
    let mut out = Vec::new();
    meta.parse_nested_meta(|entry| {
        let column = entry.path.get_ident().ok_or_else(|| {
            syn::Error::new(entry.path.span(), format!("expected a column name\n{help}"))
        })?;
        let ty: syn::Type = entry.value().and_then(|v| v.parse()).map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected `{} = <Rust type>`\n{help}", column.unraw()),
            )
        })?;
        let text = quote::ToTokens::to_token_stream(&ty).to_string();
        out.push(RustTypeSpec {
            column: Spanned::new(column.unraw().to_string(), column.span()),
            rust_type: Spanned::new(text, ty.span()),
            tokens: quote::ToTokens::into_token_stream(ty),
        });
        Ok(())
    })?;
    Ok(out)
}

/// `swap(...)`; `None` when a required part is missing or malformed (already reported).
fn parse_swap(cx: &mut Ctxt, meta: &ParseNestedMeta) -> syn::Result<Option<SwapSpec>> {
    let mut columns: Option<Vec<SwapColumnSpec>> = None;
    let mut references: Option<Vec<ReferenceSpec>> = None;
    let mut unique: Option<Vec<UniqueSpec>> = None;
    let mut name = None;
    let mut broken = false;
    let swap_path = meta.path.clone();
    let help = format!("help: the correct format looks like `{SWAP_FORMAT}`");

    meta.parse_nested_meta(|inner| {
        // name = cars_bigint
        if inner.path.is_ident("name") {
            let value = parse_name_value(&inner)?;
            if name.is_some() {
                cx.error_spanned_by(&inner.path, "duplicate `name`");
            } else {
                name = Some(value);
            }
        // columns(id: Int8, price: Numeric = "round(price)::numeric")
        } else if inner.path.is_ident("columns") {
            let list = List {
                what: "the columns whose type changes",
                format: SWAP_COLUMNS_FORMAT,
                duplicate: "duplicate `columns(...)`: list every column that changes type in one",
            };
            match list.parse::<SwapColumnEntry>(cx, &inner, columns.is_some())? {
                Parsed::List(parsed) => columns = Some(parsed.into_iter().map(|e| e.0).collect()),
                Parsed::Duplicate => {}
                Parsed::Broken => broken = true,
            }
        // references(trips.car_id, invoices.car_id)
        } else if inner.path.is_ident("references") {
            let list = List {
                what: "the referencing columns, as `table.column`,",
                format: REFERENCES_FORMAT,
                duplicate: "duplicate `references(...)`: list every referencing column in one",
            };
            match list.parse::<ReferenceEntry>(cx, &inner, references.is_some())? {
                Parsed::List(parsed) => {
                    references = Some(parsed.into_iter().map(|e| e.0).collect())
                }
                Parsed::Duplicate => {}
                Parsed::Broken => broken = true,
            }
        // unique(vin, (make, plate))
        } else if inner.path.is_ident("unique") {
            let list = List {
                what: "the unique indexes besides the primary key, each a column or `(a, b)`,",
                format: UNIQUE_FORMAT,
                duplicate: "duplicate `unique(...)`: list every unique index in one",
            };
            match list.parse::<UniqueEntry>(cx, &inner, unique.is_some())? {
                Parsed::List(parsed) => unique = Some(parsed.into_iter().map(|e| e.0).collect()),
                Parsed::Duplicate => {}
                Parsed::Broken => broken = true,
            }
        } else {
            skip_meta_value(&inner)?;
            let key = path_text(&inner.path);
            let keys = SWAP_KEYS
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let message = match key.as_str() {
                "into" | "key" | "primary_key" | "unique_key" | "filter" | "sync" | "model" => {
                    format!("`{key}` belongs to `extract(...)`; swap takes {keys}\n{help}")
                }
                _ => {
                    let hint = match key.as_str() {
                        "refs" | "referenced_by" | "foreign_keys" | "fks" => Some("references"),
                        "types" | "column" => Some("columns"),
                        "unique_indexes" | "uniques" | "unique_index" | "indexes" => Some("unique"),
                        _ => suggest(&key, &SWAP_KEYS),
                    }
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                    format!("unknown swap key `{key}`{hint}; expected one of {keys}\n{help}")
                }
            };
            cx.error_spanned_by(&inner.path, message);
        }
        Ok(())
    })?;

    if !broken && columns.as_ref().is_none_or(|c| c.is_empty()) {
        cx.error_spanned_by(
            &swap_path,
            format!("swap needs the columns whose type changes: `{SWAP_COLUMNS_FORMAT}`\n{help}"),
        );
    }
    match columns {
        Some(columns) if !broken && !columns.is_empty() => Ok(Some(SwapSpec {
            columns,
            references: references.unwrap_or_default(),
            unique: unique.unwrap_or_default(),
            name,
            span: syn::spanned::Spanned::span(&swap_path),
        })),
        _ => Ok(None),
    }
}

/// A parenthesized, comma-separated list under a key (`columns(...)`, `references(...)`).
struct List {
    /// What the list holds, for "expected … in parentheses".
    what: &'static str,
    format: &'static str,
    /// The message when the key was given before.
    duplicate: &'static str,
}

enum Parsed<T> {
    List(Vec<T>),
    /// Given twice: reported, the first one stands.
    Duplicate,
    /// Malformed: reported, and the rest of the attribute is still read.
    Broken,
}

impl List {
    fn parse<T: Parse>(
        &self,
        cx: &mut Ctxt,
        inner: &ParseNestedMeta,
        seen: bool,
    ) -> syn::Result<Parsed<T>> {
        if !inner.input.peek(syn::token::Paren) {
            cx.error_spanned_by(
                &inner.path,
                format!(
                    "expected {} in parentheses\nhelp: the correct format looks like `{}`",
                    self.what, self.format
                ),
            );
            skip_meta_value(inner)?;
            return Ok(Parsed::Broken);
        }
        let content;
        syn::parenthesized!(content in inner.input);
        Ok(
            match Punctuated::<T, Token![,]>::parse_terminated(&content) {
                Ok(_) if seen => {
                    cx.error_spanned_by(&inner.path, self.duplicate);
                    Parsed::Duplicate
                }
                Ok(parsed) => Parsed::List(parsed.into_iter().collect()),
                Err(error) => {
                    // Contained: the rest of the attribute is still read and checked.
                    cx.syn_error(error);
                    let _: TokenStream = content.parse()?;
                    Parsed::Broken
                }
            },
        )
    }
}

/// One entry of swap's `columns(...)`: `column: SqlType [= "expression"]`.
struct SwapColumnEntry(SwapColumnSpec);

impl Parse for SwapColumnEntry {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let column = Ident::parse_any(input).map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected a column name\n{SWAP_COLUMN_HELP}"),
            )
        })?;
        let name = column.unraw().to_string();
        if input.peek(Token![as]) {
            return Err(syn::Error::new(
                input.span(),
                format!("a swap keeps every column's name; `as` renames columns only in `extract(...)`\n{SWAP_COLUMN_HELP}"),
            ));
        }
        if !input.peek(Token![:]) {
            return Err(syn::Error::new(
                column.span(),
                format!("`{name}` needs its new type: `{name}: Int8`\n{SWAP_COLUMN_HELP}"),
            ));
        }
        input.parse::<Token![:]>()?;
        let path: syn::Path = input.parse().map_err(|e| {
            syn::Error::new(e.span(), format!("expected the Diesel SQL type `{name}` changes to, like `Int8`\n{SWAP_COLUMN_HELP}"))
        })?;
        let last = path.segments.last().expect("a parsed path has a segment");
        if !last.arguments.is_empty() {
            return Err(syn::Error::new_spanned(
                &path,
                format!(
                    "write the new type's name alone, like `{name}: Int8`: a swap keeps each column's nullability, and does not change array columns\n{SWAP_COLUMN_HELP}"
                ),
            ));
        }
        let new_type = Spanned::new(last.ident.to_string(), path.span());
        let cast = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            let lit: LitStr = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!("expected the SQL expression as a string, like `{name}: Numeric = \"round({name})::numeric\"`"),
                )
            })?;
            Some(Spanned::new(lit.value(), lit.span()))
        } else {
            None
        };
        if !input.is_empty() && !input.peek(Token![,]) {
            let unexpected: proc_macro2::TokenTree = input.fork().parse()?;
            return Err(input.error(format!(
                "unexpected `{unexpected}` after column `{name}`\n{SWAP_COLUMN_HELP}"
            )));
        }
        Ok(SwapColumnEntry(SwapColumnSpec {
            column: Spanned::new(name, column.span()),
            new_type,
            cast,
        }))
    }
}

/// One entry of `references(...)`: `table.column`.
struct ReferenceEntry(ReferenceSpec);

impl Parse for ReferenceEntry {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let help = format!("help: each entry names a column of another table that references the key, like `{REFERENCES_FORMAT}`");
        let table = Ident::parse_any(input)
            .map_err(|e| syn::Error::new(e.span(), format!("expected `table.column`\n{help}")))?;
        if !input.peek(Token![.]) {
            return Err(syn::Error::new(
                table.span(),
                format!("expected `{}.<column>`: the table and its column that references the key\n{help}", table.unraw()),
            ));
        }
        input.parse::<Token![.]>()?;
        let column = Ident::parse_any(input).map_err(|e| {
            syn::Error::new(
                e.span(),
                format!(
                    "expected the referencing column's name after `{}.`\n{help}",
                    table.unraw()
                ),
            )
        })?;
        if !input.is_empty() && !input.peek(Token![,]) {
            let unexpected: proc_macro2::TokenTree = input.fork().parse()?;
            return Err(input.error(format!(
                "unexpected `{unexpected}` after `{}.{}`\n{help}",
                table.unraw(),
                column.unraw()
            )));
        }
        Ok(ReferenceEntry(ReferenceSpec {
            table: Spanned::new(table.unraw().to_string(), table.span()),
            column: Spanned::new(column.unraw().to_string(), column.span()),
        }))
    }
}

/// One entry of `unique(...)`: a column, or several in parentheses in the index's order.
struct UniqueEntry(UniqueSpec);

fn unique_help() -> String {
    format!("help: each entry is the column of a unique index, or its columns in parentheses, like `{UNIQUE_FORMAT}`")
}

/// A column of a `unique(...)` entry.
fn unique_column(input: ParseStream) -> syn::Result<Spanned<String>> {
    Ident::parse_any(input)
        .map(|c| Spanned::new(c.unraw().to_string(), c.span()))
        .map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected a column name\n{}", unique_help()),
            )
        })
}

impl Parse for UniqueEntry {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let columns = if input.peek(syn::token::Paren) {
            let content;
            let parens = syn::parenthesized!(content in input);
            let columns: Vec<Spanned<String>> =
                Punctuated::<Spanned<String>, Token![,]>::parse_terminated_with(
                    &content,
                    unique_column,
                )?
                .into_iter()
                .collect();
            if columns.is_empty() {
                return Err(syn::Error::new(
                    parens.span.join(),
                    format!(
                        "expected the index's columns inside the parentheses\n{}",
                        unique_help()
                    ),
                ));
            }
            columns
        } else {
            vec![unique_column(input)?]
        };
        if !input.is_empty() && !input.peek(Token![,]) {
            let unexpected: proc_macro2::TokenTree = input.fork().parse()?;
            return Err(input.error(format!(
                "unexpected `{unexpected}` in `unique(...)`\n{}",
                unique_help()
            )));
        }
        Ok(UniqueEntry(UniqueSpec { columns }))
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
    use crate::spec::SwapSpec;

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

    fn parse(attrs: TokenStream) -> Result<ModelSpec, Vec<String>> {
        let input: DeriveInput = syn::parse2(quote::quote! {
            #[diesel(table_name = cars)]
            #attrs
            struct Car { id: i32 }
        })
        .expect("a struct");
        parse_model(&input).map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
    }

    fn swap_of(spec: &ModelSpec) -> &SwapSpec {
        match &spec.migration {
            MigrationSpec::Swap(swap) => swap,
            MigrationSpec::Extract(_) => panic!("not a swap"),
        }
    }

    #[test]
    fn parses_a_swap_with_every_key() {
        let spec = parse(quote::quote! {
            #[zmig(
                swap(
                    columns(id: Int8, price: Numeric = "round(price)::numeric"),
                    references(trips.car_id, r#type.car_id),
                    name = cars_bigint
                ),
                stage = "move"
            )]
        })
        .unwrap();
        assert_eq!(spec.stage.value, Stage::Move);
        assert_eq!(spec.migration.stages(), &Stage::SWAP);
        assert_eq!(spec.migration_name(), "cars_bigint");
        let swap = swap_of(&spec);
        let columns: Vec<(&str, &str, Option<&str>)> = swap
            .columns
            .iter()
            .map(|c| {
                (
                    c.column.value.as_str(),
                    c.new_type.value.as_str(),
                    c.cast.as_ref().map(|c| c.value.as_str()),
                )
            })
            .collect();
        assert_eq!(
            columns,
            [
                ("id", "Int8", None),
                ("price", "Numeric", Some("round(price)::numeric"))
            ]
        );
        let references: Vec<(&str, &str)> = swap
            .references
            .iter()
            .map(|r| (r.table.value.as_str(), r.column.value.as_str()))
            .collect();
        assert_eq!(references, [("trips", "car_id"), ("type", "car_id")]);
        assert_eq!(
            swap_of(&spec).to_attribute(),
            "swap(columns(id: Int8, price: Numeric = \"round(price)::numeric\"), references(trips.car_id, r#type.car_id), name = cars_bigint)"
        );
    }

    #[test]
    fn a_swap_is_named_after_its_table_by_default() {
        let spec =
            parse(quote::quote!(#[zmig(swap(columns(id: Int8)), stage = "prepare")])).unwrap();
        assert_eq!(spec.migration_name(), "cars_swap");
        assert!(swap_of(&spec).references.is_empty());
        assert_eq!(spec.stage.value.number(), 1);
        assert_eq!(Stage::Finalize.number(), 3);
        assert_eq!(Stage::Contract.number(), 6);
    }

    #[test]
    fn stages_belong_to_their_strategy() {
        let errors =
            parse(quote::quote!(#[zmig(stage = "expand", swap(columns(id: Int8)))])).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("`expand` is a stage of extract, not of swap; the stages of swap, in order, are \"prepare\", \"move\", \"finalize\""), "{errors:?}");

        let errors = parse(
            quote::quote!(#[zmig(extract(into = addresses, columns(street1)), stage = "finalize")]),
        )
        .unwrap_err();
        assert!(
            errors[0].starts_with("`finalize` is a stage of swap, not of extract"),
            "{errors:?}"
        );

        let errors =
            parse(quote::quote!(#[zmig(swap(columns(id: Int8)), stage = "prepar")])).unwrap_err();
        assert!(
            errors[0].contains("did you mean `stage = \"prepare\"`?"),
            "{errors:?}"
        );

        let errors = parse(quote::quote!(#[zmig(swap(columns(id: Int8)))])).unwrap_err();
        assert!(errors[0].contains("add `stage = \"prepare\"`; the stages, in order, are \"prepare\", \"move\", \"finalize\""), "{errors:?}");
    }

    #[test]
    fn one_strategy_per_model() {
        let errors = parse(quote::quote!(#[zmig(
            extract(into = addresses, columns(street1)),
            swap(columns(id: Int8)),
            stage = "expand"
        )]))
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("`extract(...)` and `swap(...)` on one model"),
            "{errors:?}"
        );

        let errors = parse(quote::quote!(#[zmig(stage = "prepare")])).unwrap_err();
        assert!(
            errors[0].starts_with("#[zmig] needs a strategy: `extract(...)` or `swap(...)`"),
            "{errors:?}"
        );
    }

    #[test]
    fn swap_errors_are_all_reported_and_teach() {
        let errors = parse(quote::quote!(#[zmig(
            swap(colums(id: Int8), into = bigger, name = cars_bigint),
            stage = "prepare"
        )]))
        .unwrap_err();
        assert!(errors.iter().any(|e| e.starts_with("unknown swap key `colums` (did you mean `columns`?); expected one of `columns`, `references`, `unique`, `name`")), "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("`into` belongs to `extract(...)`")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("swap needs the columns whose type changes")),
            "{errors:?}"
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn swap_unique_entries_parse_and_teach() {
        let spec = parse(quote::quote!(#[zmig(
            swap(columns(id: Int8), unique(vin, (make, r#type)), name = cars_bigint),
            stage = "prepare"
        )]))
        .unwrap();
        let unique: Vec<Vec<&str>> = swap_of(&spec)
            .unique
            .iter()
            .map(|u| u.columns.iter().map(|c| c.value.as_str()).collect())
            .collect();
        assert_eq!(unique, [vec!["vin"], vec!["make", "type"]]);
        assert_eq!(
            swap_of(&spec).to_attribute(),
            "swap(columns(id: Int8), unique(vin, (make, r#type)), name = cars_bigint)"
        );
        for (attr, expected) in [
            (
                quote::quote!(swap(columns(id: Int8), unique)),
                "expected the unique indexes besides the primary key, each a column or `(a, b)`, in parentheses",
            ),
            (
                quote::quote!(swap(columns(id: Int8), unique(vin: Text))),
                "unexpected `:` in `unique(...)`",
            ),
            (
                quote::quote!(swap(columns(id: Int8), unique(()))),
                "expected the index's columns inside the parentheses",
            ),
            (
                quote::quote!(swap(columns(id: Int8), unique("vin"))),
                "expected a column name",
            ),
            (
                quote::quote!(swap(columns(id: Int8), unique(vin), unique(make))),
                "duplicate `unique(...)`: list every unique index in one",
            ),
            (
                quote::quote!(swap(columns(id: Int8), unique_indexes(vin))),
                "unknown swap key `unique_indexes` (did you mean `unique`?)",
            ),
        ] {
            let errors = parse(quote::quote!(#[zmig(#attr, stage = "prepare")])).unwrap_err();
            assert!(
                errors.iter().any(|e| e.starts_with(expected)),
                "{attr}: {errors:?}"
            );
            assert!(
                expected.starts_with("duplicate")
                    || errors.iter().any(|e| e.contains("unique(vin")),
                "{attr}: the format is shown: {errors:?}"
            );
        }
    }

    #[test]
    fn swap_columns_and_references_are_checked() {
        for (attr, expected) in [
            (
                quote::quote!(swap(columns(id))),
                "`id` needs its new type: `id: Int8`",
            ),
            (
                quote::quote!(swap(columns(id as key: Int8))),
                "a swap keeps every column's name",
            ),
            (
                quote::quote!(swap(columns(id: Nullable<Int8>))),
                "write the new type's name alone",
            ),
            (
                quote::quote!(swap(columns(id: i64))),
                "`i64` is a Rust type",
            ),
            (
                quote::quote!(swap(columns(id: Uuid))),
                "without an expression zmig only widens",
            ),
            (
                quote::quote!(swap(columns(price: Numeric = round))),
                "expected the SQL expression as a string",
            ),
            (
                quote::quote!(swap(columns(price: Numeric = "round(price); DROP TABLE cars"))),
                "invalid expression for `price`: `;` would end the statement",
            ),
            (
                quote::quote!(swap(columns(id: Int8, id: Int8))),
                "column `id` is listed twice",
            ),
            (
                quote::quote!(swap(columns(id: Int8), name = "Cars Bigint")),
                "help: the correct format looks like `name = cars_bigint`",
            ),
            (
                quote::quote!(swap(columns(id: Int8), references(trips))),
                "expected `trips.<column>`",
            ),
            (
                quote::quote!(swap(columns(id: Int8), references(cars.parent_id))),
                "`cars.parent_id` is a column of `cars` itself",
            ),
            (
                quote::quote!(swap(columns(id: Int8), references(trips.car_id, trips.car_id))),
                "`trips.car_id` is listed twice",
            ),
        ] {
            let errors = parse(quote::quote!(#[zmig(#attr, stage = "prepare")])).unwrap_err();
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{attr}: {errors:?}"
            );
        }
    }
}
