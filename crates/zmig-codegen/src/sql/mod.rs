//! The SQL emitter: turns a resolved plan into the `up.sql` / `down.sql` of each phase.

pub mod extract;
pub mod filter;
mod quote;
pub mod swap;

pub use quote::{quote_ident, quote_literal, quote_qualified};

use crate::spec::Stage;

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

    /// A comment paragraph, reflowed to `COMMENT_WIDTH` so names spliced into it never make
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
    /// A `BEGIN` is not written because after an error the server would leave the session in
    /// the aborted transaction, where the runner's next command fails; in the implicit one the
    /// error ends it. The COMMIT of an implicit transaction warns "there is no transaction in
    /// progress", which the `SET LOCAL` before it keeps off the operator's screen.
    pub fn commit(&mut self) {
        self.statement("SET LOCAL client_min_messages = error;");
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

    /// Takes every lock `locks` names (a table and its mode) before the transaction's other
    /// statements, so that no lock is held while waiting for the next and none is upgraded
    /// later. Any runner can apply the file under load: each attempt waits briefly, and one
    /// that fails ran in a subtransaction whose rollback releases what it took, so nothing is
    /// held while it backs off (jittered, doubling) before the next; past the budget the
    /// migration fails with SQLSTATE 55P03 (`lock_not_available`), nothing changed, as a
    /// `lock_timeout` does.
    pub fn take_locks(&mut self, migration: &str, locks: &[(String, Lock)]) {
        if locks.is_empty() {
            return;
        }
        let traffic = locks.iter().any(|(_, lock)| lock.blocks_traffic());
        let (attempt_ms, budget_s) = if traffic {
            (TRAFFIC_LOCK_ATTEMPT_MS, TRAFFIC_LOCK_BUDGET_S)
        } else {
            (QUIET_LOCK_ATTEMPT_MS, QUIET_LOCK_BUDGET_S)
        };
        let mut modes: Vec<Lock> = locks.iter().map(|(_, lock)| *lock).collect();
        modes.sort();
        modes.dedup();
        // Strongest first, each mode's tables in one statement, in the order given.
        let statements: Vec<String> = modes
            .iter()
            .rev()
            .map(|mode| {
                let tables: Vec<&str> = locks
                    .iter()
                    .filter(|(_, lock)| lock == mode)
                    .map(|(table, _)| table.as_str())
                    .collect();
                format!(
                    "            LOCK TABLE {} IN {} MODE;",
                    tables.join(", "),
                    mode.mode()
                )
            })
            .collect();
        let names: Vec<&str> = locks.iter().map(|(table, _)| table.as_str()).collect();
        self.comment(&format!(
            "The locks this transaction needs, all at once and before anything else, in attempts of \
             {attempt_ms} ms: a request that waits makes {} traffic queue behind it, so each attempt \
             gives up quickly, its subtransaction releases whatever it took, and the next comes \
             after a short jittered pause in which the queue drains. After {budget_s} s of attempts \
             the migration fails with nothing changed (SQLSTATE 55P03), to be run again.",
            if traffic { "the tables'" } else { "no" }
        ));
        let message = quote_literal(&format!(
            "zmig {migration}: {LOCK_NOT_AVAILABLE}: could not lock {} within {budget_s} s of attempts: other sessions hold or wait for conflicting locks",
            names.join(", ")
        ));
        self.statement(&format!(
            "DO $zmig$\n\
             DECLARE\n    \
                 saved text := current_setting('lock_timeout');\n    \
                 started timestamptz := clock_timestamp();\n    \
                 attempts integer := 0;\n\
             BEGIN\n    \
                 PERFORM set_config('lock_timeout', '{attempt_ms}ms', true);\n    \
                 LOOP\n        \
                     BEGIN\n\
             {}\n            \
                         EXIT;\n        \
                     EXCEPTION WHEN lock_not_available THEN\n            \
                         attempts := attempts + 1;\n            \
                         IF clock_timestamp() - started > interval '{budget_s} seconds' THEN\n                \
                             RAISE EXCEPTION USING ERRCODE = 'lock_not_available',\n                    \
                                 MESSAGE = {message},\n                    \
                                 DETAIL = format('%s attempts of {attempt_ms} ms each', attempts),\n                    \
                                 HINT = 'Nothing was changed. Run the migration again (zmig_runtime::migrate retries by itself), or look in pg_stat_activity for long transactions on these tables.';\n            \
                         END IF;\n            \
                         PERFORM pg_sleep(least(0.02 * power(2, least(attempts, 5)), 0.5) * (0.5 + random()));\n        \
                     END;\n    \
                 END LOOP;\n    \
                 PERFORM set_config('lock_timeout', saved, true);\n\
             END\n\
             $zmig$;",
            statements.join("\n"),
        ));
    }

    /// `inner` as one `DO` block that does nothing where `done_when` (a SQL condition) holds,
    /// saying `notice` instead. For the first transaction of a file that commits more than once:
    /// a run that stopped after that transaction committed (a crash, a kill, a lock timeout in a
    /// later step) leaves diesel's record of the migration unwritten, so the runner runs the
    /// whole file again; the block is then skipped, and the later steps, each safe to repeat,
    /// finish the work. The statements inside run as written (PL/pgSQL runs SQL statements,
    /// `DO` blocks included); squawk does not read inside a `DO`, so its markers go.
    pub fn once(&mut self, done_when: &str, notice: &str, inner: Script) {
        self.comment(
            "Once: what follows, up to the COMMIT, runs as one block that an earlier run which \
             committed it and then stopped makes a no-op, so this file can be run again from any \
             point it stopped at.",
        );
        let mut body = String::new();
        for line in inner.finish().lines() {
            if line.starts_with("-- squawk-ignore") {
                continue;
            }
            if !line.is_empty() {
                body.push_str("    ");
                body.push_str(line);
            }
            body.push('\n');
        }
        self.statement(&format!(
            "DO $zmig_once$\n\
             BEGIN\n    \
                 IF {done_when} THEN\n        \
                     RAISE NOTICE '%', {};\n        \
                     RETURN;\n    \
                 END IF;\n\
             {body}\
             END\n\
             $zmig_once$;",
            quote_literal(notice)
        ));
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// A table lock a transaction takes up front, with [`Script::take_locks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lock {
    /// Conflicts with no traffic, only with VACUUM, ANALYZE, index builds and DDL: what
    /// `VALIDATE CONSTRAINT` takes.
    ShareUpdateExclusive,
    /// Blocks writes, not reads: `CREATE TRIGGER`, `ADD FOREIGN KEY … NOT VALID`.
    ShareRowExclusive,
    /// Blocks reads and writes: most `ALTER TABLE`, `DROP TRIGGER`.
    AccessExclusive,
}

impl Lock {
    fn mode(self) -> &'static str {
        match self {
            Lock::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            Lock::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            Lock::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// Whether waiting for it queues the application's reads or writes.
    fn blocks_traffic(self) -> bool {
        self != Lock::ShareUpdateExclusive
    }
}

/// How the message of a lock wait that gave up begins, in any `lc_messages`: the runtime's
/// retrying runner (`zmig_runtime::migrate::is_lock_timeout`) recognises it by this.
pub const LOCK_NOT_AVAILABLE: &str = "lock not available (SQLSTATE 55P03)";

/// One attempt's wait for locks that block traffic: while a request waits, every query on the
/// table queues behind it, so no attempt may keep them waiting longer than this.
const TRAFFIC_LOCK_ATTEMPT_MS: u32 = 100;
/// All attempts together, for locks that block traffic: below the transaction's 10 s
/// `statement_timeout`.
const TRAFFIC_LOCK_BUDGET_S: u32 = 8;
/// One attempt's wait for locks that block no traffic: longer than `deadlock_timeout` (1 s by
/// default), after which an autovacuum in the way cancels itself.
const QUIET_LOCK_ATTEMPT_MS: u32 = 2_000;
/// All attempts together, for locks that block no traffic (their transactions have no
/// statement timeout).
const QUIET_LOCK_BUDGET_S: u32 = 60;

pub use zmig_core::names::{fnv1a, object_name};
