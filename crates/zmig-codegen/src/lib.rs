//! zmig's code generator, shared by the derive and the `cargo xtask zmig` commands so that they
//! can never disagree about what an attribute means. A plain library: no proc-macro, no database
//! driver (the database's column types come in through [`schema::Catalog`]).

use std::cell::Cell;

#[cfg(feature = "cli")]
pub mod cli;
pub mod derive;
pub mod migrations;
pub mod plan;
#[cfg(feature = "cli")]
pub mod project;
pub mod schema;
#[cfg(feature = "cli")]
pub mod shim;
pub mod spec;
pub mod sql;
#[cfg(feature = "cli")]
pub mod view_shim;

/// How the user runs zmig's commands, for next-step messages and the plan's texts:
/// `cargo xtask zmig`, or `zmig` while the standalone binary runs a command ([`as_command`]).
/// Generated files never use it: what `generate` writes must not depend on who ran it.
pub fn command_name() -> &'static str {
    COMMAND_NAME.with(Cell::get)
}

/// Makes [`command_name`] say `name` on this thread until the guard is dropped.
pub fn as_command(name: &'static str) -> CommandNameGuard {
    CommandNameGuard(COMMAND_NAME.with(|c| c.replace(name)))
}

/// Restores the command name [`as_command`] replaced.
#[must_use = "the name applies until the guard is dropped"]
pub struct CommandNameGuard(&'static str);

impl Drop for CommandNameGuard {
    fn drop(&mut self) {
        COMMAND_NAME.with(|c| c.set(self.0));
    }
}

thread_local! {
    static COMMAND_NAME: Cell<&'static str> = const { Cell::new("cargo xtask zmig") };
}
