//! The SQL emitter: turns a resolved plan into the `up.sql` / `down.sql` of each phase.

pub mod extract;
pub mod filter;
mod quote;
pub mod swap;

pub use quote::{quote_ident, quote_literal, quote_qualified};

use crate::spec::{Stage, MAX_IDENTIFIER_BYTES};

/// One phase's migration, before it is written to a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseSql {
    pub stage: Stage,
    pub up: String,
    pub down: String,
    /// `false` writes `metadata.toml` with `run_in_transaction = false`.
    pub run_in_transaction: bool,
}

impl PhaseSql {
    pub fn transactional(stage: Stage, up: Script, down: Script) -> Self {
        PhaseSql {
            stage,
            up: up.finish(),
            down: down.finish(),
            run_in_transaction: true,
        }
    }

    pub fn outside_transaction(stage: Stage, up: Script, down: Script) -> Self {
        PhaseSql {
            stage,
            up: up.finish(),
            down: down.finish(),
            run_in_transaction: false,
        }
    }
}

/// Width of comment text, after the `-- `.
const COMMENT_WIDTH: usize = 96;

/// A migration file being written: statements, each preceded by the comment that says why it
/// is safe.
#[derive(Default)]
pub struct Script {
    text: String,
}

impl Script {
    pub fn new() -> Self {
        Script::default()
    }

    /// A comment paragraph, reflowed to [`COMMENT_WIDTH`] so names spliced into it never make
    /// a line run off a reviewer's screen.
    pub fn comment(&mut self, text: &str) {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        let mut line = String::new();
        for word in text.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > COMMENT_WIDTH {
                self.text.push_str(&format!("-- {line}\n"));
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            self.text.push_str(&format!("-- {line}\n"));
        }
    }

    pub fn statement(&mut self, sql: &str) {
        // The functions zmig drops are its own trigger functions: no client calls them.
        if sql.starts_with("DROP FUNCTION") {
            self.squawk_ignore("ban-drop-function");
        }
        self.text.push_str(sql);
        self.text.push('\n');
    }

    /// A squawk rule this statement knowingly breaks; the comment above it says why.
    pub fn squawk_ignore(&mut self, rule: &str) {
        self.text.push_str(&format!("-- squawk-ignore {rule}\n"));
    }

    /// Ends the implicit transaction PostgreSQL runs a multi-statement file in, so the next step
    /// does not hold the locks of the previous ones (only in `run_in_transaction = false` files).
    pub fn commit(&mut self) {
        self.squawk_ignore("transaction-nesting");
        self.statement("COMMIT;");
    }

    /// Drops a constraint zmig itself added a few statements earlier.
    pub fn drop_own_constraint(&mut self, sql: &str) {
        self.squawk_ignore("ban-drop-constraint");
        self.statement(sql);
    }

    /// A deliberately destructive step, fenced so Diesel teams' linters (diesel-guard) accept it
    /// and reviewers see it.
    pub fn safety_assured(&mut self, why: &str, statements: &[String]) {
        self.comment(why);
        self.text.push_str("-- safety-assured:start\n");
        for statement in statements {
            if statement.starts_with("DROP TABLE") {
                self.squawk_ignore("ban-drop-table");
            } else if statement.contains("DROP COLUMN") {
                self.squawk_ignore("ban-drop-column");
            } else if statement.contains("SET NOT NULL") {
                self.squawk_ignore("prefer-robust-stmts");
            } else if statement.contains("DROP CONSTRAINT") {
                self.squawk_ignore("ban-drop-constraint");
            } else if statement.contains("RENAME COLUMN") {
                self.squawk_ignore("renaming-column");
            } else if statement.contains("DROP NOT NULL") {
                self.squawk_ignore("ban-drop-not-null");
            }
            self.statement(statement);
        }
        self.text.push_str("-- safety-assured:end\n");
    }

    /// Opens a fenced section like [`Script::safety_assured`]'s, for steps that each carry
    /// their own comment; [`Script::assured_end`] closes it.
    pub fn assured_start(&mut self, why: &str) {
        self.comment(why);
        self.text.push_str("-- safety-assured:start\n");
    }

    pub fn assured_end(&mut self) {
        self.text.push_str("-- safety-assured:end\n");
    }

    pub fn finish(self) -> String {
        self.text
    }
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
