//! zmig's code generator, shared by the derive and the `cargo xtask zmig` commands so that they
//! can never disagree about what an attribute means. A plain library: no proc-macro, no database
//! driver (the database's column types come in through [`schema::Catalog`]).

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
