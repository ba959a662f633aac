//! SQL re-queries over the lake: a DataFusion session with every table of a config registered
//! under its name, optionally as of a version or a time.

use std::sync::Arc;

use sluice_lake::deltalake::DeltaTable;
use sluice_lake::deltalake::arrow::record_batch::RecordBatch;
use sluice_lake::deltalake::datafusion::prelude::SessionContext;
use sluice_lake::{Lake, LakeError};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A table could not be opened.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// The SQL failed; the message says where.
    #[error("{message}")]
    Sql {
        /// What DataFusion said, plus the known tables when a name is unknown.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// Which version of the tables to read.
#[derive(Clone, Copy, Debug, Default)]
pub enum AsOf {
    /// The latest version.
    #[default]
    Latest,
    /// A table version (tables that do not have it are read at their latest, with a warning).
    Version(i64),
    /// The version current at this time (ms since the epoch).
    Time(i64),
}

/// A DataFusion session over the tables of a config.
pub struct QuerySession {
    ctx: SessionContext,
    tables: Vec<String>,
}

impl std::fmt::Debug for QuerySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuerySession")
            .field("tables", &self.tables)
            .finish()
    }
}

impl QuerySession {
    /// Registers every existing table among `names` (tables not created yet are skipped).
    pub async fn new(lake: &Lake, names: &[String], as_of: AsOf) -> Result<Self> {
        let ctx = SessionContext::new();
        let mut tables = Vec::new();
        for name in names {
            let Some(mut table) = lake.open(name).await? else {
                continue;
            };
            match as_of {
                AsOf::Latest => {}
                AsOf::Version(v) => match lake.open_at_version(name, v).await {
                    Ok(t) => table = t,
                    Err(e) => {
                        tracing::warn!(table = %name, "version {v} unavailable ({e}); reading the latest")
                    }
                },
                AsOf::Time(ms) => {
                    if let Some(at) = chrono::DateTime::from_timestamp_millis(ms)
                        && let Err(e) = table.load_with_datetime(at).await
                    {
                        tracing::warn!(table = %name, "no version at {at} ({e}); reading the latest");
                        table.load().await.map_err(|e| LakeError::delta(name, e))?;
                    }
                }
            }
            register(&ctx, name, &table).await?;
            tables.push(name.clone());
        }
        Ok(Self { ctx, tables })
    }

    /// The registered table names.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    /// Runs one SQL statement.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let err = |e: sluice_lake::deltalake::datafusion::error::DataFusionError| {
            let mut message = e.to_string();
            if message.contains("not found") {
                message.push_str(&format!("; known tables: {}", self.tables.join(", ")));
            }
            QueryError::Sql { message }
        };
        let df = self.ctx.sql(sql).await.map_err(err)?;
        df.collect().await.map_err(err)
    }
}

async fn register(ctx: &SessionContext, name: &str, table: &DeltaTable) -> Result<()> {
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| LakeError::delta(name, e))?;
    let provider = table.table_provider().await.map_err(|e| QueryError::Sql {
        message: format!("table {name}: {e}"),
    })?;
    ctx.register_table(name, Arc::clone(&provider))
        .map_err(|e| QueryError::Sql {
            message: format!("table {name}: {e}"),
        })?;
    Ok(())
}
