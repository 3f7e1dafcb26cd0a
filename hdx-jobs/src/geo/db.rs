//! Connecting to PostGIS. Errors keep the database's own message but never its host, user or
//! password, which must never reach CKAN or the API (docs/hdx-contract.md §3.5).

use std::time::Duration;

use super::config::GisDbConfig;

/// A database failure, with a message safe to show.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DbError(pub String);

impl DbError {
    /// Wraps a tokio-postgres error, keeping only the server's message (or a generic text for
    /// connection problems, whose details name the host).
    pub fn from_pg(context: &str, e: &tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => DbError(format!("{context}: {}", db.message())),
            None if e.is_closed() => {
                DbError(format!("{context}: the database connection was closed"))
            }
            None => DbError(format!("{context}: cannot reach the layer database")),
        }
    }
}

/// Opens a connection (its driver runs on the tokio runtime until the client is dropped).
pub async fn connect(config: &GisDbConfig) -> Result<tokio_postgres::Client, DbError> {
    let mut pg = config
        .pg_config()
        .map_err(|_| DbError("the layer database settings are invalid (HDX_GISDB_*)".into()))?;
    pg.connect_timeout(Duration::from_secs(10));
    let (client, connection) = pg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| DbError::from_pg("cannot connect to the layer database", &e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %DbError::from_pg("layer database connection", &e), "connection ended");
        }
    });
    Ok(client)
}
