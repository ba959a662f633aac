//! Reading tables back as Arrow through DataFusion (tests, `sluice query`, checks).

use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;

use crate::{LakeError, Result};

/// Every row of `table` at its loaded version.
pub async fn scan(name: &str, table: &DeltaTable) -> Result<Vec<RecordBatch>> {
    scan_sql(name, table, &format!("SELECT * FROM \"{name}\"")).await
}

/// Runs `sql` with `table` registered under `name`.
pub async fn scan_sql(name: &str, table: &DeltaTable, sql: &str) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new();
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| LakeError::delta(name, e))?;
    let provider = table.table_provider().await?;
    ctx.register_table(name, Arc::clone(&provider))?;
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// The number of rows in `table` at its loaded version.
pub async fn table_row_count(name: &str, table: &DeltaTable) -> Result<u64> {
    let batches = scan_sql(
        name,
        table,
        &format!("SELECT count(*) AS n FROM \"{name}\""),
    )
    .await?;
    let n = batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<deltalake::arrow::array::Int64Array>()
        })
        .map(|a| a.value(0))
        .unwrap_or(0);
    Ok(n.max(0) as u64)
}
