//! The view shim: from a swap's prepare until its finalize is generated, `schema.rs` stays the
//! one the team's code needs, although the database then holds a view where the table was.
//!
//! `diesel print-schema` prints no views, so after prepare it would drop the swapped table's
//! `table!`, its `joinable!` lines and its place in `allow_tables_to_appear_in_same_query!`,
//! print `<t>_old`, `<t>_new`, `<t>_temp` and zmig's bookkeeping tables instead, and the shadow
//! column of each reference. Two things put that right, both written by [`crate::shim::plan`]:
//! diesel.toml's `[print_schema] filter` leaves out the tables ([`excluded_tables`]), and a
//! zmig-owned patch puts back what no filter can (the view's `table!` and joinables, the
//! reference without its shadow column). The patch is a diff from what print-schema prints to
//! `schema.rs`; [`printed_during_swap`] rebuilds what it prints, for the patch to apply.

use std::path::Path;

use crate::plan::Swap;
use crate::project::Located;
use crate::schema::parse_schema;
use crate::spec::Stage;

/// The swaps whose view is in the database, or will be once the generated folders ran: from
/// prepare until finalize is generated (finalize puts the table back, print-schema prints it).
pub fn active_swaps(project: &crate::project::Project) -> Vec<&Swap> {
    project
        .swaps
        .iter()
        .map(|m| &m.swap)
        .filter(|s| matches!(s.stage, Stage::Prepare | Stage::Move))
        .collect()
}

/// Whether a `table!` block (its lines) uses a type of `pub mod sql_types`.
fn uses_custom_types<S: AsRef<str>>(block: &[S]) -> bool {
    block.iter().any(|l| {
        l.as_ref()
            .trim_start()
            .starts_with("use super::sql_types::")
    })
}

fn not_kept_reason(table: &str) -> String {
    format!(
        "`{table}` uses a type of `pub mod sql_types`, which print-schema may stop printing while `{table}` is a \
         view; zmig does not yet keep schema.rs for such a swap: keep `diesel migration run` from \
         rewriting schema.rs until finalize (run the migrations through zmig's runner or \
         `embed_migrations!`, or restore schema.rs after it)"
    )
}

/// Why the view shim cannot keep `schema_rs` for `swap`, if it cannot (its table uses a type of
/// `pub mod sql_types`): `generate` then leaves schema.rs and diesel.toml alone for that swap
/// and says so, as before the shim existed, rather than refusing the whole crate.
pub fn not_kept(schema_rs: &str, swap: &Swap) -> Option<String> {
    let schema = parse_schema(Path::new("schema.rs"), schema_rs).ok()?;
    let table = schema
        .tables
        .iter()
        .find(|t| t.sql_name == swap.table.name && t.pg_schema == swap.table.schema)?;
    let lines: Vec<&str> = schema_rs.lines().collect();
    let (start, end) = table_block(&lines, table.line).ok()?;
    uses_custom_types(&lines[start..=end]).then(|| not_kept_reason(&table.rust_name))
}

/// The lines (0-based, inclusive) of the `table!` whose name is on line `line` (1-based): from
/// `diesel::table! {` above it to the `}` that closes it at the same indentation; what is
/// missing otherwise.
fn table_block<S: AsRef<str>>(lines: &[S], line: usize) -> Result<(usize, usize), &'static str> {
    let start = (0..line.min(lines.len()))
        .rev()
        .find(|&i| lines[i].as_ref().trim() == "diesel::table! {")
        .ok_or("`diesel::table! {` above the table's name")?;
    let first = lines[start].as_ref();
    let closing = format!("{}}}", &first[..first.len() - first.trim_start().len()]);
    let end = (line..lines.len())
        .find(|&i| lines[i].as_ref().trim_end() == closing)
        .ok_or("the `}` that closes `diesel::table!`")?;
    Ok((start, end))
}

/// What zmig's own tables begin with: the backfill's, verify's, the run log and a swap's state
/// (`zmig_swap_state`), all created in the application's schema.
pub const BOOKKEEPING_PREFIX: &str = "zmig_";

/// The `except_tables` regexes (diesel matches them against each table's name) that keep the
/// tables of `swaps` and zmig's bookkeeping out of print-schema's output.
pub fn excluded_tables(swaps: &[&Swap]) -> Vec<String> {
    let mut regexes = vec![format!("^{BOOKKEEPING_PREFIX}")];
    for swap in swaps {
        for table in [swap.old_table(), swap.new_table(), swap.temp_table()] {
            regexes.push(format!("^{}$", regex_escape(&table.name)));
        }
    }
    regexes
}

/// `text` matched literally by a regex of the `regex` crate diesel uses.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What `diesel print-schema` prints (with [`excluded_tables`] as its filter, before any patch)
/// once the prepare migrations of `swaps` ran, rebuilt from `native`: what it printed before
/// prepare, which is `schema.rs` (less the team's own patch, when there is one).
///
/// From `native`: each swapped table's `table!` goes (with the blank line diesel writes after
/// it), and every `joinable!` naming it; each referencing column is as the database still has
/// it (the type prepare recorded: `schema.rs` may say the new one already, the one-release
/// way), followed, last in its table as `ADD COLUMN` puts it, by its shadow column
/// (`car_id_zmig -> Nullable<Int8>`); `allow_tables_to_appear_in_same_query!` lists the tables
/// left, laid out as rustfmt lays out diesel's output. Each step first checks that the text is
/// laid out the way print-schema writes it, or says where it is not.
///
/// Also returns notes for the report: where `native` is not laid out as print-schema lays it
/// out, the patch takes print-schema's layout there, so applied it gives `schema.rs` all the same.
pub fn printed_during_swap(
    file: &Path,
    native: &str,
    swaps: &[&Swap],
) -> Result<(String, Vec<String>), Located> {
    let mut text = native.to_owned();
    let mut notes = Vec::new();
    for swap in swaps {
        text = without_swapped_table(file, &text, swap, &mut notes)?;
    }
    Ok((text, notes))
}

fn located(file: &Path, line: usize, message: String) -> Located {
    Located {
        file: file.to_owned(),
        line,
        column: 1,
        message,
    }
}

/// The Diesel type print-schema prints for an integer PostgreSQL type (a swap's key and its
/// references are integers).
fn diesel_integer(pg_type: &str) -> Option<&'static str> {
    match pg_type {
        "smallint" => Some("Int2"),
        "integer" => Some("Int4"),
        "bigint" => Some("Int8"),
        _ => None,
    }
}

fn without_swapped_table(
    file: &Path,
    text: &str,
    swap: &Swap,
    notes: &mut Vec<String>,
) -> Result<String, Located> {
    let schema = parse_schema(file, text).map_err(|e| Located {
        file: e.file,
        line: e.line,
        column: e.column,
        message: e.message,
    })?;
    let find = |name: &crate::plan::TableName| {
        schema
            .tables
            .iter()
            .find(|t| t.sql_name == name.name && t.pg_schema == name.schema)
    };
    let Some(table) = find(&swap.table) else {
        return Err(located(
            file,
            1,
            format!(
                "table `{}` is not in this file; zmig's swap `{}` keeps it here while the database holds a view",
                swap.table.name, swap.name
            ),
        ));
    };
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    let not_printed = |line: usize, what: &str| {
        located(
            file,
            line,
            format!(
                "this is not laid out the way `diesel print-schema` writes it ({what}), so zmig cannot rebuild \
                 what print-schema prints during the swap `{}`: run `diesel print-schema` (with rustfmt installed, \
                 as diesel formats with it), then generate again",
                swap.name
            ),
        )
    };

    // Each referencing column as the database has it, then its shadow column last in its table.
    // Line numbers stay valid: lines are edited in place and insertions are appended to a line.
    for reference in &swap.references {
        let Some(other) = find(&reference.table) else {
            return Err(located(
                file,
                1,
                format!(
                    "table `{}` is not in this file; `{}` widens its column `{}`",
                    reference.table.name, swap.name, reference.column
                ),
            ));
        };
        let Some(column) = other
            .columns
            .iter()
            .find(|c| c.sql_name == reference.column)
        else {
            return Err(located(
                file,
                other.line,
                format!(
                    "`{}` has no column `{}` here; `{}` widens it",
                    other.rust_name, reference.column, swap.name
                ),
            ));
        };
        let (Some(old), Some(new)) = (
            diesel_integer(&reference.old_type),
            diesel_integer(&reference.new_type),
        ) else {
            return Err(located(
                file,
                column.line,
                format!(
                    "zmig keeps schema.rs through a swap for integer references only; `{}.{}` is `{}`",
                    other.rust_name, reference.column, reference.old_type
                ),
            ));
        };
        let wrap = |ty: &str, nullable: bool| {
            if nullable {
                format!("Nullable<{ty}>")
            } else {
                ty.to_owned()
            }
        };
        let line = &lines[column.line - 1];
        let Some((before, _)) = line.split_once(" -> ") else {
            return Err(not_printed(column.line, "`name -> Type,` on one line"));
        };
        lines[column.line - 1] = format!("{before} -> {},\n", wrap(old, reference.nullable));
        let last = other.columns.last().expect("a table! has columns");
        let shadow = crate::sql::swap::shadow_column(reference);
        if syn::parse_str::<syn::Ident>(&shadow).is_err() || shadow.starts_with("r#") {
            return Err(located(
                file,
                column.line,
                format!(
                    "the shadow column `{shadow}` is not a plain Rust identifier, and zmig does not yet write \
                     print-schema's `#[sql_name]` for it"
                ),
            ));
        }
        let last_line = &lines[last.line - 1];
        if !last_line.trim_end().ends_with(',') {
            return Err(not_printed(last.line, "a comma after the last column"));
        }
        let indent = &last_line[..last_line.len() - last_line.trim_start().len()];
        let shadow_line = format!("{indent}{shadow} -> {},\n", wrap(new, true));
        lines[last.line - 1].push_str(&shadow_line);
    }

    // The swapped table's `table!`: from `diesel::table! {` to its closing `}`.
    let (start, end) =
        table_block(&lines, table.line).map_err(|missing| not_printed(table.line, missing))?;
    if uses_custom_types(&lines[start..=end]) {
        return Err(located(file, table.line, not_kept_reason(&table.rust_name)));
    }
    let mut drop = vec![false; lines.len()];
    drop[start..=end].fill(true);
    // Diesel writes a blank line between tables and before what follows them.
    if end + 1 < lines.len() && lines[end + 1].trim().is_empty() {
        drop[end + 1] = true;
    } else if start > 0 && lines[start - 1].trim().is_empty() {
        drop[start - 1] = true;
    }

    // Joinables naming it: print-schema prints no foreign key of a view.
    let mut joinables = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some((child, parent)) = joinable(line) {
            joinables.push(i);
            if child == table.rust_name || parent == table.rust_name {
                drop[i] = true;
            }
        }
    }
    if let Some(&first) = joinables.first() {
        if joinables.iter().all(|&i| drop[i]) && first > 0 && lines[first - 1].trim().is_empty() {
            drop[first - 1] = true;
        }
    }

    // allow_tables_to_appear_in_same_query!: the tables left, laid out again.
    const ALLOW: &str = "diesel::allow_tables_to_appear_in_same_query!(";
    let mut allow_text = None;
    if let Some(at) = lines.iter().position(|l| l.trim_start().starts_with(ALLOW)) {
        let close = (at..lines.len())
            .find(|&i| lines[i].trim_end().ends_with(");"))
            .ok_or_else(|| {
                not_printed(at + 1, "`);` closing allow_tables_to_appear_in_same_query!")
            })?;
        if lines[close + 1..]
            .iter()
            .any(|l| l.trim_start().starts_with(ALLOW))
        {
            return Err(not_printed(
                close + 2,
                "one allow_tables_to_appear_in_same_query!: zmig does not handle `fk_related_tables` yet",
            ));
        }
        let indent = lines[at][..lines[at].len() - lines[at].trim_start().len()].to_owned();
        let body: String = lines[at..=close].concat();
        let inner = body
            .trim()
            .strip_prefix(ALLOW)
            .and_then(|rest| rest.strip_suffix(");"))
            .unwrap_or_default();
        let names: Vec<String> = inner
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        if render_allow(&indent, &names) != body {
            notes.push(format!(
                "{}:{}: allow_tables_to_appear_in_same_query! is not laid out as `diesel print-schema` (through \
                 rustfmt) lays it out; zmig's patch assumes print-schema's layout",
                file.display(),
                at + 1
            ));
        }
        let left: Vec<String> = names
            .into_iter()
            .filter(|n| n.trim_start_matches("r#") != table.rust_name)
            .collect();
        drop[at..=close].fill(true);
        if left.len() >= 2 {
            allow_text = Some((at, render_allow(&indent, &left)));
        } else if at > 0 && lines[at - 1].trim().is_empty() {
            drop[at - 1] = true;
        }
    }

    let mut out = String::with_capacity(text.len());
    for (i, line) in lines.iter().enumerate() {
        if let Some((at, allow)) = &allow_text {
            if *at == i {
                out.push_str(allow);
            }
        }
        if !drop[i] {
            // Diesel writes one blank line between sections and none at the end: what is taken
            // out leaves no more.
            if line.trim().is_empty() && (out.is_empty() || out.ends_with("\n\n")) {
                continue;
            }
            out.push_str(line);
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    Ok(out)
}

/// What print-schema prints (before any patch) once `swap`'s finalize ran, from `native`, what
/// it printed before prepare, as far as zmig can tell: the key and each changed integer column
/// with its new type, each reference with its new type and last in its table (finalize swaps
/// the shadow column in). `None` when it cannot tell (a change that is not an integer's, an
/// attribute on a reference); used to warn, never to write.
pub fn printed_after_finalize(file: &Path, native: &str, swap: &Swap) -> Option<String> {
    let schema = parse_schema(file, native).ok()?;
    let find = |name: &crate::plan::TableName| {
        schema
            .tables
            .iter()
            .find(|t| t.sql_name == name.name && t.pg_schema == name.schema)
    };
    let retype = |line: &str, ty: &str, nullable: bool| -> Option<String> {
        let (before, _) = line.split_once(" -> ")?;
        let ty = if nullable {
            format!("Nullable<{ty}>")
        } else {
            ty.to_owned()
        };
        Some(format!("{before} -> {ty},\n"))
    };
    let mut lines: Vec<String> = native.split_inclusive('\n').map(str::to_owned).collect();
    let table = find(&swap.table)?;
    for column in swap.columns.iter().filter(|c| c.changes()) {
        let new = diesel_integer(&column.new_type)?;
        let at = table
            .columns
            .iter()
            .find(|c| c.sql_name == column.name)?
            .line
            - 1;
        lines[at] = retype(&lines[at], new, column.nullable)?;
    }
    let mut removed = vec![false; lines.len()];
    let mut appended: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    for reference in &swap.references {
        let other = find(&reference.table)?;
        let at = other
            .columns
            .iter()
            .find(|c| c.sql_name == reference.column)?
            .line
            - 1;
        if at == 0 || lines[at - 1].trim_start().starts_with("#[") {
            return None;
        }
        let line = retype(
            &lines[at],
            diesel_integer(&reference.new_type)?,
            reference.nullable,
        )?;
        removed[at] = true;
        appended
            .entry(other.columns.last()?.line - 1)
            .or_default()
            .push(line);
    }
    let mut out = String::with_capacity(native.len());
    for (i, line) in lines.iter().enumerate() {
        if !removed[i] {
            out.push_str(line);
        }
        appended
            .get(&i)
            .into_iter()
            .flatten()
            .for_each(|l| out.push_str(l));
    }
    Some(out)
}

/// `(child, parent)` of a `diesel::joinable!(child -> parent (fk));` line.
fn joinable(line: &str) -> Option<(&str, &str)> {
    let inner = line
        .trim()
        .strip_prefix("diesel::joinable!(")?
        .strip_suffix(");")?;
    let (child, rest) = inner.split_once(" -> ")?;
    let (parent, _) = rest.split_once(" (")?;
    Some((
        child.trim().trim_start_matches("r#"),
        parent.trim().trim_start_matches("r#"),
    ))
}

/// `allow_tables_to_appear_in_same_query!` as rustfmt (which diesel_cli runs on its output)
/// writes it: on one line when that fits in 100 columns, else one table per line.
fn render_allow(indent: &str, names: &[String]) -> String {
    let one_line = format!(
        "{indent}diesel::allow_tables_to_appear_in_same_query!({},);\n",
        names.join(", ")
    );
    if one_line.trim_end().chars().count() <= 100 {
        return one_line;
    }
    let mut out = format!("{indent}diesel::allow_tables_to_appear_in_same_query!(\n");
    for name in names {
        out.push_str(&format!("{indent}    {name},\n"));
    }
    out.push_str(&format!("{indent});\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARS: &str = "// @generated automatically by Diesel CLI.

diesel::table! {
    cars (id) {
        id -> Int4,
        make -> Text,
        model -> Text,
        year -> Int4,
        mileage -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    trips (id) {
        id -> Int8,
        car_id -> Int4,
        km -> Int4,
    }
}

diesel::joinable!(trips -> cars (car_id));

diesel::allow_tables_to_appear_in_same_query!(cars, trips,);
";

    /// `diesel print-schema --except-tables '^zmig_' '^cars_old$' '^cars_new$' '^cars_temp$'`
    /// (diesel_cli 2.3.14, rustfmt) on the cars example after its prepare migration.
    const CARS_PRINTED: &str = "// @generated automatically by Diesel CLI.

diesel::table! {
    trips (id) {
        id -> Int8,
        car_id -> Int4,
        km -> Int4,
        car_id_zmig -> Nullable<Int8>,
    }
}
";

    fn swap(table: &str, references: &[(&str, &str, bool)]) -> Swap {
        let references: Vec<serde_json::Value> = references
            .iter()
            .map(|(t, c, nullable)| {
                serde_json::json!({
                    "table": {"schema": null, "name": t}, "column": c, "old_type": "integer",
                    "new_type": "bigint", "nullable": nullable, "table_key": "id"
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "name": "cars_bigint", "stage": "prepare",
            "source": {"file": "src/models.rs", "line": 1, "model": "Car"},
            "attribute": "swap(...)", "table": {"schema": null, "name": table},
            "columns": [{"name": "id", "old_type": "integer", "new_type": "bigint",
                         "cast_text": null, "nullable": false}],
            "key": "id", "references": references
        }))
        .unwrap()
    }

    fn printed(schema_rs: &str, swap: &Swap) -> String {
        let (text, notes) =
            printed_during_swap(Path::new("src/schema.rs"), schema_rs, &[swap]).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        text
    }

    #[test]
    fn the_cars_example_as_print_schema_prints_it_after_prepare() {
        let cars = swap("cars", &[("trips", "car_id", false)]);
        assert_eq!(printed(CARS, &cars), CARS_PRINTED);
        // The one release: schema.rs says Int8 already; print-schema prints what prepare recorded.
        let wide = CARS
            .replace(
                "    cars (id) {\n        id -> Int4",
                "    cars (id) {\n        id -> Int8",
            )
            .replace("car_id -> Int4", "car_id -> Int8");
        assert_eq!(printed(&wide, &cars), CARS_PRINTED);
        assert_eq!(
            excluded_tables(&[&cars]),
            ["^zmig_", "^cars_old$", "^cars_new$", "^cars_temp$"]
        );
    }

    #[test]
    fn other_joinables_and_a_long_allow_list_stay_as_print_schema_writes_them() {
        let tables = [
            "a_very_long_table_name",
            "another_long_table_name",
            "cars",
            "owners",
            "services",
            "trips",
        ];
        let mut schema_rs = String::from("// @generated automatically by Diesel CLI.\n");
        for table in tables {
            let extra = match table {
                "cars" => "        owner_id -> Int4,\n",
                "services" | "trips" => "        car_id -> Nullable<Int4>,\n",
                _ => "",
            };
            schema_rs.push_str(&format!(
                "\ndiesel::table! {{\n    {table} (id) {{\n        id -> Int4,\n{extra}    }}\n}}\n"
            ));
        }
        schema_rs.push_str(
            "\ndiesel::joinable!(cars -> owners (owner_id));\n\
             diesel::joinable!(services -> cars (car_id));\n\
             diesel::joinable!(trips -> owners (car_id));\n",
        );
        let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        schema_rs.push('\n');
        schema_rs.push_str(&render_allow("", &names));
        assert!(schema_rs.ends_with("    trips,\n);\n"), "{schema_rs}");

        let cars = swap(
            "cars",
            &[("services", "car_id", true), ("trips", "car_id", true)],
        );
        let text = printed(&schema_rs, &cars);
        assert!(!text.contains("    cars (id)"), "{text}");
        assert!(
            !text.contains("-> cars") && !text.contains("cars ->"),
            "{text}"
        );
        assert!(
            text.contains("\ndiesel::joinable!(trips -> owners (car_id));\n\n"),
            "{text}"
        );
        assert!(text.contains(
            "    services (id) {\n        id -> Int4,\n        car_id -> Nullable<Int4>,\n        car_id_zmig -> Nullable<Int8>,\n    }\n}\n\ndiesel::table! {\n    trips"
        ), "{text}");
        // Five names no longer fit on one line: still one per line.
        assert!(text.ends_with(
            "diesel::allow_tables_to_appear_in_same_query!(\n    a_very_long_table_name,\n    another_long_table_name,\n    owners,\n    services,\n    trips,\n);\n"
        ), "{text}");
    }

    #[test]
    fn the_last_table_and_the_last_joinable_take_their_blank_lines_with_them() {
        let schema_rs = "diesel::table! {\n    trips (id) {\n        id -> Int8,\n        car_id -> Int4,\n    }\n}\n\n\
                         diesel::table! {\n    vans (id) {\n        id -> Int4,\n    }\n}\n\n\
                         diesel::joinable!(trips -> vans (car_id));\n\n\
                         diesel::allow_tables_to_appear_in_same_query!(trips, vans,);\n";
        let vans = swap("vans", &[("trips", "car_id", false)]);
        assert_eq!(
            printed(schema_rs, &vans),
            "diesel::table! {\n    trips (id) {\n        id -> Int8,\n        car_id -> Int4,\n        car_id_zmig -> Nullable<Int8>,\n    }\n}\n"
        );
    }

    #[test]
    fn after_finalize_the_reference_is_last_with_its_new_type() {
        let cars = swap("cars", &[("trips", "car_id", false)]);
        let after = printed_after_finalize(Path::new("src/schema.rs"), CARS, &cars).unwrap();
        assert_eq!(
            after,
            CARS.replace(
                "    cars (id) {\n        id -> Int4",
                "    cars (id) {\n        id -> Int8"
            )
            .replace(
                "        car_id -> Int4,\n        km -> Int4,\n",
                "        km -> Int4,\n        car_id -> Int8,\n"
            )
        );
    }

    #[test]
    fn a_swapped_table_with_a_custom_type_is_refused() {
        let schema_rs = CARS.replace(
            "    cars (id) {\n",
            "    use diesel::sql_types::*;\n    use super::sql_types::Mood;\n\n    cars (id) {\n",
        );
        let cars = swap("cars", &[("trips", "car_id", false)]);
        let error =
            printed_during_swap(Path::new("src/schema.rs"), &schema_rs, &[&cars]).unwrap_err();
        assert!(
            error.message.contains("pub mod sql_types"),
            "{}",
            error.message
        );
        // generate leaves such a swap out of the shim, with this warning, rather than refusing.
        let why = not_kept(&schema_rs, &cars).expect("not kept");
        assert!(why.contains("keep `diesel migration run` from"), "{why}");
        assert_eq!(not_kept(CARS, &cars), None);
    }

    #[test]
    fn allow_tables_as_rustfmt_writes_them() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            render_allow("", &names(&["cars", "trips"])),
            "diesel::allow_tables_to_appear_in_same_query!(cars, trips,);\n"
        );
        // What print-schema printed after prepare without zmig (102 columns on one line).
        assert_eq!(
            render_allow(
                "",
                &names(&["cars_new", "cars_old", "cars_temp", "trips", "zmig_swap_state"])
            ),
            "diesel::allow_tables_to_appear_in_same_query!(\n    cars_new,\n    cars_old,\n    cars_temp,\n    trips,\n    zmig_swap_state,\n);\n"
        );
    }

    #[test]
    fn regexes_match_the_names_literally() {
        assert_eq!(regex_escape("cars_new"), "cars_new");
        assert_eq!(regex_escape("car.park$new"), "car\\.park\\$new");
    }

    #[test]
    fn joinable_lines() {
        assert_eq!(
            joinable("diesel::joinable!(trips -> cars (car_id));\n"),
            Some(("trips", "cars"))
        );
        assert_eq!(joinable("diesel::table! {\n"), None);
    }
}
