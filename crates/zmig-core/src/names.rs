//! The names of what zmig creates in the database and looks up again. A migration name has at
//! most [`MAX_MIGRATION_NAME`] characters, so `zmig_<name>_<suffix>` for every suffix here stays
//! within PostgreSQL's [`MAX_IDENTIFIER_BYTES`]: those names are never cut, and a runtime that
//! has only the migration's name spells them as the migration did. Names formed from table or
//! column names, which may be longer, go through [`object_name`].

/// PostgreSQL's limit on an identifier (`NAMEDATALEN - 1`); longer names are silently cut.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// The longest migration name: `zmig_<name>_sync_owner` and the other names formed from it stay
/// within PostgreSQL's 63 bytes, so none is cut (and two never become one).
pub const MAX_MIGRATION_NAME: usize = 40;

/// Whether `name` may name a migration: 1 to 40 characters of a-z, 0-9 and _, starting with a
/// letter. The attribute refuses any other at compile time, and the runtime before a name
/// reaches a query.
pub fn is_migration_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_MIGRATION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase()
}

/// `a_b_c` as a PostgreSQL object name. Past 63 bytes PostgreSQL would silently truncate, and
/// two long names could collide; cut and add a hash of the whole name instead.
pub fn object_name(parts: &[&str]) -> String {
    let full = parts.join("_");
    if full.len() <= MAX_IDENTIFIER_BYTES {
        return full;
    }
    let hash = format!("{:08x}", fnv1a(full.as_bytes()) as u32);
    let mut cut = MAX_IDENTIFIER_BYTES - hash.len() - 1;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}", &full[..cut])
}

/// FNV-1a, 64 bits: a stable hash with no dependency, for names and checksums.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `zmig_<migration>_<suffix>`: a function or trigger of migration `migration`.
fn routine(migration: &str, suffix: &str) -> String {
    format!("zmig_{migration}_{suffix}")
}

/// The functions and triggers an extract's migrations create that the runtime (or the
/// application, through the derive's wrappers) calls or looks for, by bare name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractNames {
    /// The backfill's batch (dual_write).
    pub backfill: String,
    /// Which owner keys the backfill walks (dual_write).
    pub key_range: String,
    /// What the derive's `sync = app` wrappers call after each write of an owner (dual_write).
    pub sync_owner: String,
    /// What `verify` calls for each chunk of keys (dual_write).
    pub diff: String,
    /// The owner → new sync's trigger function (dual_write with `sync = trigger`).
    pub to_new: String,
    /// The owner → new sync's insert trigger.
    pub to_new_insert: String,
    pub to_new_update: String,
    pub to_new_delete: String,
    /// The new → owner sync's trigger function (write_new).
    pub to_old: String,
    pub to_old_insert_delete: String,
    pub to_old_update: String,
}

impl ExtractNames {
    pub fn of(migration: &str) -> ExtractNames {
        let f = |suffix| routine(migration, suffix);
        ExtractNames {
            backfill: f("backfill"),
            key_range: f("key_range"),
            sync_owner: f("sync_owner"),
            diff: f("diff"),
            to_new: f("to_new"),
            to_new_insert: f("to_new_ins"),
            to_new_update: f("to_new_upd"),
            to_new_delete: f("to_new_del"),
            to_old: f("to_old"),
            to_old_insert_delete: f("to_old_ins_del"),
            to_old_update: f("to_old_upd"),
        }
    }
}

/// The functions a swap's prepare migration creates, by bare name (the migration creates them
/// in the swapped table's schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapNames {
    /// The view's INSTEAD OF trigger functions.
    pub insert: String,
    pub update: String,
    pub delete: String,
    /// The move's batch.
    pub move_rows: String,
    /// The move back's batch.
    pub move_back: String,
    /// The fill of the referencing columns, one batch.
    pub sync_refs: String,
    /// Where the rows are (`status`, the progress).
    pub progress: String,
    /// The swap's tables by role.
    pub tables: String,
    /// What `verify` reads.
    pub check: String,
    /// The concurrent index builds on the filled shadow columns.
    pub ref_indexes: String,
    /// The concurrent build of the new table's primary key index.
    pub key_index: String,
    /// The concurrent rebuilds of the referencing tables' other indexes.
    pub ref_reindex: String,
    /// The disk the move still needs at its peak.
    pub disk_needed: String,
    /// Raises a clash of a unique index besides the primary key, named as the original (only
    /// for a swap with `unique(...)`).
    pub unique_violation: String,
}

impl SwapNames {
    /// Each name through `f` (qualified with a schema, say).
    pub fn map(self, f: impl Fn(String) -> String) -> SwapNames {
        SwapNames {
            insert: f(self.insert),
            update: f(self.update),
            delete: f(self.delete),
            move_rows: f(self.move_rows),
            move_back: f(self.move_back),
            sync_refs: f(self.sync_refs),
            progress: f(self.progress),
            tables: f(self.tables),
            check: f(self.check),
            ref_indexes: f(self.ref_indexes),
            key_index: f(self.key_index),
            ref_reindex: f(self.ref_reindex),
            disk_needed: f(self.disk_needed),
            unique_violation: f(self.unique_violation),
        }
    }

    pub fn of(swap: &str) -> SwapNames {
        let f = |suffix| routine(swap, suffix);
        SwapNames {
            insert: f("insert"),
            update: f("update"),
            delete: f("delete"),
            move_rows: f("move"),
            move_back: f("move_back"),
            sync_refs: f("sync_refs"),
            progress: f("progress"),
            tables: f("tables"),
            check: f("check"),
            ref_indexes: f("ref_indexes"),
            key_index: f("key_index"),
            ref_reindex: f("ref_reindex"),
            disk_needed: f("disk_needed"),
            unique_violation: f("unique_violation"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_longest_migration_name_are_never_cut() {
        let name = "a".repeat(MAX_MIGRATION_NAME);
        assert!(is_migration_name(&name));
        let e = ExtractNames::of(&name);
        let s = SwapNames::of(&name);
        for n in [
            &e.backfill,
            &e.key_range,
            &e.sync_owner,
            &e.diff,
            &e.to_new,
            &e.to_new_insert,
            &e.to_new_update,
            &e.to_new_delete,
            &e.to_old,
            &e.to_old_insert_delete,
            &e.to_old_update,
            &s.insert,
            &s.update,
            &s.delete,
            &s.move_rows,
            &s.move_back,
            &s.sync_refs,
            &s.progress,
            &s.tables,
            &s.check,
            &s.ref_indexes,
            &s.key_index,
            &s.ref_reindex,
            &s.disk_needed,
        ] {
            assert!(n.len() <= MAX_IDENTIFIER_BYTES, "{n}");
            assert_eq!(&object_name(&[n]), n);
        }
    }

    #[test]
    fn migration_names_start_with_a_letter() {
        assert!(is_migration_name("cars_bigint"));
        assert!(is_migration_name("v2_cars"));
        for bad in ["", "2cars", "_cars", "Cars", "cars-bigint", &"a".repeat(41)] {
            assert!(!is_migration_name(bad), "{bad}");
        }
    }

    #[test]
    fn long_object_names_are_cut_with_a_hash_of_the_whole() {
        let long = "t".repeat(70);
        let a = object_name(&[&long, "a"]);
        let b = object_name(&[&long, "b"]);
        assert_eq!(a.len(), MAX_IDENTIFIER_BYTES);
        assert_ne!(a, b);
        assert_eq!(object_name(&["cars", "zmig_key"]), "cars_zmig_key");
    }
}
