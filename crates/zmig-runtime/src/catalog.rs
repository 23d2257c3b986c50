//! The database's own description of a table's columns, for `plan` and `generate` (see
//! `zmig_codegen::schema::catalog`): the one query, run over a Diesel connection opened when it
//! is first needed, so a crate whose migrations are all generated needs no database.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text};
use zmig_codegen::schema::catalog::{columns_query, regclass_text, CatalogColumn};
use zmig_codegen::schema::{Catalog, ExactColumn};

use crate::url::redact;

/// A [`Catalog`] reading the database at a URL.
pub struct PgCatalog {
    url: String,
    conn: Option<PgConnection>,
}

impl PgCatalog {
    pub fn new(url: impl Into<String>) -> PgCatalog {
        PgCatalog {
            url: url.into(),
            conn: None,
        }
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    sql_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    collation: Option<String>,
    #[diesel(sql_type = Bool)]
    not_null: bool,
    #[diesel(sql_type = Nullable<Text>)]
    default_expr: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
    #[diesel(sql_type = Bool)]
    compare_text: bool,
}

impl Catalog for PgCatalog {
    fn describe(&self) -> String {
        format!("the database at {}", redact(&self.url))
    }

    fn columns(&mut self, schema: Option<&str>, table: &str) -> Result<Vec<CatalogColumn>, String> {
        if self.conn.is_none() {
            let conn = PgConnection::establish(&self.url).map_err(|e| e.to_string())?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let rows: Vec<Row> = diesel::sql_query(columns_query())
            .bind::<Text, _>(regclass_text(schema, table))
            .load(conn)
            .map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .map(|r| CatalogColumn {
                name: r.name,
                exact: ExactColumn {
                    sql_type: r.sql_type,
                    collation: r.collation,
                    not_null: r.not_null,
                    default: r.default_expr,
                    comment: r.comment,
                    compare_text: r.compare_text,
                },
            })
            .collect())
    }

    fn dry_run(&mut self, sql: &str) -> Result<(), String> {
        use diesel::connection::SimpleConnection;
        use diesel::result::Error;
        if self.conn.is_none() {
            let conn = PgConnection::establish(&self.url).map_err(|e| e.to_string())?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let outcome = conn.transaction::<(), Error, _>(|conn| {
            conn.batch_execute(sql)?;
            Err(Error::RollbackTransaction)
        });
        match outcome {
            Ok(()) | Err(Error::RollbackTransaction) => Ok(()),
            Err(Error::DatabaseError(_, info)) => Err(match info.hint() {
                Some(hint) => format!("{}\nhelp: {hint}", info.message()),
                None => info.message().to_owned(),
            }),
            Err(other) => Err(other.to_string()),
        }
    }
}
