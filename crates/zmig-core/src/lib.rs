//! What zmig's derive (`zmig-derive`), code generator (`zmig-codegen`) and runtime
//! (`zmig-runtime`) must agree on, written once: the stages of each strategy ([`Stage`]), the
//! names of the database objects a generated migration creates and the runtime calls
//! ([`names`]), and the rule a migration name obeys ([`names::is_migration_name`]). The code
//! generator spells its SQL with these names and the runtime looks the same objects up, so the
//! two agree by construction rather than by a test.

pub mod names;
mod stage;

pub use stage::Stage;
