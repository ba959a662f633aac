//! A pipeline's events table following its data's schema: columns added when the pipeline
//! opens (a configured column the table lacks, a subject's newer latest schema) and while it
//! runs (a writer schema with new fields), always before the rows that need them. Columns are
//! matched by name; the rules are in [`sluice_formats::evolve`] and docs/formats.md.

use sluice_config::{FieldConfig, PipelineConfig};
use sluice_formats::evolve::{arrow_fields, growth};
use sluice_formats::schema::{column_type_of, is_sluice_column};
use sluice_lake::Lake;
use sluice_telemetry::{events, spec};

use crate::{IngestError, Result};

/// The data columns (sluice's own left out) of an events table's Arrow schema.
pub fn data_columns(table: &str, schema: &arrow::datatypes::Schema) -> Result<Vec<FieldConfig>> {
    schema
        .fields()
        .iter()
        .filter(|f| !is_sluice_column(f.name()))
        .map(|f| {
            let ty = column_type_of(f.data_type()).ok_or_else(|| IngestError::Schema {
                table: table.to_string(),
                message: format!(
                    "column {:?} has type {}, which sluice cannot decode records into",
                    f.name(),
                    f.data_type()
                ),
            })?;
            Ok(FieldConfig {
                name: f.name().clone(),
                ty,
                nullable: f.is_nullable(),
                format: None,
            })
        })
        .collect()
}

/// Adds to pipeline `p`'s existing events table the columns (and nested fields) of `p.schema`
/// it lacks, in one metadata commit; a column whose type the table cannot hold is an error
/// naming it. Nothing happens when the table does not exist yet or already holds them.
pub async fn grow_at_open(p: &PipelineConfig, lake: &Lake) -> Result<()> {
    let Some(table) = lake.open(&p.table).await? else {
        return Ok(());
    };
    let schema = sluice_lake::table_arrow_schema(&p.table, &table)?;
    let have = data_columns(&p.table, &schema)?;
    let grow = growth(&have, &p.schema).map_err(|clash| IngestError::Schema {
        table: p.table.clone(),
        message: format!("{clash}; a column's type cannot change in place (name the column differently, or write a new table)"),
    })?;
    if grow.is_empty() {
        return Ok(());
    }
    let fields: Vec<_> = arrow_fields(&grow.fields())
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let table = sluice_lake::add_columns(&p.table, table, &fields).await?;
    let names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
    spec::SCHEMA_CHANGES.inc([&p.name], 1);
    events::schema_changed(
        &p.name,
        &p.table,
        table.version().map(|v| v as i64),
        &names,
        &format!("the pipeline's columns {}", grow.describe()),
    );
    Ok(())
}

/// The columns of a pipeline whose schema lives in a registry: the subject's `latest`
/// columns for a new table; for an existing one, the table's columns grown by `latest`'s
/// when it holds them. A latest schema the table cannot hold (a type change) leaves the
/// table's columns as they are, with a warning: the pipeline starts, and that schema's
/// records go to the dead-letter table naming the field.
pub async fn registry_columns(
    p: &PipelineConfig,
    lake: &Lake,
    latest: Vec<FieldConfig>,
) -> Result<Vec<FieldConfig>> {
    let Some(table) = lake.open(&p.table).await? else {
        return Ok(latest);
    };
    let schema = sluice_lake::table_arrow_schema(&p.table, &table)?;
    let mut have = data_columns(&p.table, &schema)?;
    match growth(&have, &latest) {
        Ok(grow) => {
            for g in grow.grown {
                if let Some(h) = have.iter_mut().find(|h| h.name == g.name) {
                    *h = g;
                }
            }
            have.extend(grow.added);
        }
        Err(clash) => tracing::warn!(
            pipeline = %p.name,
            table = %p.table,
            "the subject's latest schema does not fit the table ({clash}); keeping the table's columns, and records of that schema go to the dead-letter table"
        ),
    }
    Ok(have)
}
