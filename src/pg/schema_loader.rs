//! Reads table shapes (columns in order, with types) from an upstream's catalog over a side
//! connection with the vaulted credentials, for the masking rewrite. Runs at start, after every
//! policy reload, and periodically, so added or altered columns are picked up.

use std::time::Duration;

use crate::policy::mask::{ColumnShape, SchemaSnapshot, TableShape};

use super::upstream::UpstreamTarget;

/// Every column of every ordinary, partitioned, foreign table, view and materialized view
/// outside the system schemas, in attnum order.
const COLUMNS_SQL: &str = "\
SELECT c.oid::int8, n.nspname::text, c.relname::text, a.attnum::int2, a.attname::text, \
       format_type(a.atttypid, a.atttypmod), t.typcategory::text \
FROM pg_catalog.pg_class c \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped \
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
  AND n.nspname NOT LIKE 'pg_temp%' \
ORDER BY c.oid, a.attnum";

#[derive(Debug, thiserror::Error)]
pub enum SchemaLoadError {
    #[error("upstream \"{0}\": {1}")]
    Upstream(String, String),
    #[error("upstream \"{0}\" did not answer within {1:?}")]
    Timeout(String, Duration),
}

/// Loads the table shapes of one upstream. Errors never carry credentials.
pub async fn load_schema(
    target: &UpstreamTarget,
    timeout: Duration,
) -> Result<SchemaSnapshot, SchemaLoadError> {
    match tokio::time::timeout(timeout, load(target)).await {
        Ok(r) => r,
        Err(_) => Err(SchemaLoadError::Timeout(target.name.clone(), timeout)),
    }
}

/// A tokio-postgres connection to the upstream with the vaulted login and the same TLS setting
/// as the sessions' upstream connections (schema loads, the admin API's connector probe).
pub async fn side_connection(
    target: &UpstreamTarget,
    application_name: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
    tokio_postgres::Error,
> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .dbname(&target.database)
        .user(target.user.expose())
        .password(target.password.expose())
        .application_name(application_name);
    Ok(match &target.tls {
        None => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            (client, tokio::spawn(connection))
        }
        Some(tls) => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*tls.config).clone());
            let (client, connection) = config.connect(connector).await?;
            (client, tokio::spawn(connection))
        }
    })
}

async fn load(target: &UpstreamTarget) -> Result<SchemaSnapshot, SchemaLoadError> {
    let fail = |e: tokio_postgres::Error| {
        // tokio-postgres errors name the server's message, never the password.
        SchemaLoadError::Upstream(target.name.clone(), e.to_string())
    };
    let (client, driver) = side_connection(target, "tollgate-schema")
        .await
        .map_err(fail)?;
    let rows = client.query(COLUMNS_SQL, &[]).await.map_err(fail);
    drop(client);
    let _ = driver.await;
    let mut snapshot = SchemaSnapshot::default();
    let mut current: Option<TableShape> = None;
    for row in rows? {
        let oid = u32::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        if current.as_ref().is_some_and(|t| t.oid != oid) {
            snapshot.insert(current.take().expect("checked above"));
        }
        let table = current.get_or_insert_with(|| TableShape {
            oid,
            schema: row.get(1),
            name: row.get(2),
            columns: Vec::new(),
        });
        let category: String = row.get(6);
        table.columns.push(ColumnShape {
            attnum: row.get(3),
            name: row.get(4),
            type_sql: row.get(5),
            category: category.chars().next().unwrap_or('X'),
        });
    }
    if let Some(t) = current {
        snapshot.insert(t);
    }
    Ok(snapshot)
}
