//! Shared object-store and Delta Lake plumbing: where tables live ([`Lake`]), how rows are
//! written and committed together with stream progress ([`TableWriter`]), and how a table is
//! read back as Arrow ([`scan`]).
//!
//! Progress is recorded the Delta way: one application transaction (`txn`) per source
//! topic-partition in the same commit as the data, so data files and progress become visible
//! together or not at all. A commit whose read snapshot is older than another writer's commit
//! for the same app id fails with [`LakeError::Fenced`] instead of double-writing; a writer
//! moves its snapshot over other writers' commits only when they leave its app ids alone (a
//! compaction, say).

mod background;
mod error;
pub mod fault;
pub mod merge;
pub mod rewrite;
mod scan;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Once};

use deltalake::arrow::datatypes::Schema as ArrowSchema;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use url::Url;

pub use background::BackgroundWriter;
pub use error::{LakeError, Result};
pub use scan::{scan, scan_sql, table_row_count};
pub use writer::{CommitOutcome, TableWriter, WriterOptions};

/// `batch` in `schema`: columns found by name, cast where the type differs, null where
/// missing (rows written before a column was added).
pub fn conform_batch(
    batch: &deltalake::arrow::array::RecordBatch,
    schema: &Arc<ArrowSchema>,
) -> std::result::Result<deltalake::arrow::array::RecordBatch, deltalake::arrow::error::ArrowError>
{
    use deltalake::arrow::array::{RecordBatch, new_null_array};
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => deltalake::arrow::compute::cast(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// Re-exports so that every crate uses the one arrow, parquet and datafusion of the tree.
pub use deltalake;

static REGISTER: Once = Once::new();

/// Registers the S3, Azure Blob Storage and Google Cloud Storage object-store and log-store
/// handlers with deltalake (idempotent).
pub fn register_handlers() {
    REGISTER.call_once(|| {
        deltalake::aws::register_handlers(None);
        deltalake::azure::register_handlers(None);
        deltalake::gcp::register_handlers(None);
    });
}

/// The root under which a config's tables live, plus the object-store options to reach it.
#[derive(Clone)]
pub struct Lake {
    root: Url,
    options: HashMap<String, String>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("root", &self.root.as_str())
            .finish_non_exhaustive()
    }
}

/// Properties sluice sets on the tables it creates.
#[derive(Clone, Debug, Default)]
pub struct TableSpec {
    /// Partition column names (must be columns of the schema).
    pub partition_columns: Vec<String>,
    /// Delta table properties, e.g. `delta.checkpointInterval`.
    pub properties: HashMap<String, String>,
    /// A human description stored in the table metadata.
    pub description: Option<String>,
}

impl Lake {
    /// A lake at `cfg.root` (a path, or a `file://`, `s3://`, `az://`, `abfss://` or `gs://`
    /// URL) with `cfg.options` for the store.
    pub fn new(cfg: &sluice_config::LakeConfig) -> Result<Self> {
        register_handlers();
        let root = sluice_config::lake_root_url(&cfg.root).map_err(|e| LakeError::Config {
            message: e.to_string(),
        })?;
        if root.scheme() == "file"
            && let Ok(path) = root.to_file_path()
        {
            std::fs::create_dir_all(&path).map_err(|e| LakeError::Config {
                message: format!("cannot create the lake directory {}: {e}", path.display()),
            })?;
        }
        let options = cfg
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Self { root, options })
    }

    /// The lake's root URL.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The object-store options (may hold secrets: never log them).
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The URL of table `name` under the root.
    pub fn table_url(&self, name: &str) -> Result<Url> {
        self.root
            .join(&format!("{name}/"))
            .map_err(|e| LakeError::Config {
                message: format!(
                    "table name {name:?} does not make a URL under {}: {e}",
                    self.root
                ),
            })
    }

    /// The directory of table `name` when the lake is on the local file system.
    fn local_dir(&self, name: &str) -> Result<Option<std::path::PathBuf>> {
        if self.root.scheme() != "file" {
            return Ok(None);
        }
        Ok(self.table_url(name)?.to_file_path().ok())
    }

    fn builder(&self, name: &str) -> Result<DeltaTableBuilder> {
        let url = self.table_url(name)?;
        DeltaTableBuilder::from_url(url)
            .map(|b| b.with_storage_options(self.options.clone()))
            .map_err(|source| LakeError::delta(name, source))
    }

    /// Opens table `name` at its latest version; `None` if no table exists there yet.
    pub async fn open(&self, name: &str) -> Result<Option<DeltaTable>> {
        if let Some(dir) = self.local_dir(name)?
            && !dir.join("_delta_log").is_dir()
        {
            return Ok(None);
        }
        let mut table = self
            .builder(name)?
            .build()
            .map_err(|e| LakeError::delta(name, e))?;
        match table.load().await {
            Ok(()) => Ok(Some(table)),
            Err(DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(LakeError::delta(name, e)),
        }
    }

    /// Opens table `name` at `version`.
    pub async fn open_at_version(&self, name: &str, version: i64) -> Result<DeltaTable> {
        let mut table = self
            .builder(name)?
            .build()
            .map_err(|e| LakeError::delta(name, e))?;
        let v = u64::try_from(version).map_err(|_| LakeError::Config {
            message: format!("version {version} is negative"),
        })?;
        table
            .load_version(v)
            .await
            .map_err(|e| LakeError::delta(name, e))?;
        Ok(table)
    }

    /// Opens table `name`, or creates it with `schema` when it does not exist. An existing
    /// table must have the same columns; a mismatch is an error naming the difference.
    pub async fn open_or_create(
        &self,
        name: &str,
        schema: &ArrowSchema,
        spec: &TableSpec,
    ) -> Result<DeltaTable> {
        if let Some(table) = self.open(name).await? {
            check_schema(name, &table, schema)?;
            return Ok(table);
        }
        let kernel: StructType = schema.try_into_kernel().map_err(|e| LakeError::Schema {
            table: name.into(),
            message: format!("cannot express the schema in Delta: {e}"),
        })?;
        let table = self
            .builder(name)?
            .build()
            .map_err(|e| LakeError::delta(name, e))?;
        // Statistics of binary columns cannot skip files: collect them for the others only.
        let mut properties = spec.properties.clone();
        let is_binary = |f: &&std::sync::Arc<deltalake::arrow::datatypes::Field>| {
            matches!(f.data_type(), deltalake::arrow::datatypes::DataType::Binary)
        };
        if schema.fields().iter().any(|f| is_binary(&f)) {
            let cols: Vec<&str> = schema
                .fields()
                .iter()
                .filter(|f| !is_binary(f) && !spec.partition_columns.contains(f.name()))
                .map(|f| f.name().as_str())
                .collect();
            properties
                .entry("delta.dataSkippingStatsColumns".into())
                .or_insert_with(|| cols.join(","));
        }
        let mut create = table
            .create()
            .with_table_name(name)
            .with_columns(kernel.fields().cloned())
            .with_partition_columns(spec.partition_columns.clone())
            .with_configuration(properties.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
        if let Some(d) = &spec.description {
            create = create.with_comment(d.clone());
        }
        match create.await {
            Ok(t) => Ok(t),
            // Another instance may have created it first: then use theirs.
            Err(e) => match self.open(name).await {
                Ok(Some(theirs)) => {
                    check_schema(name, &theirs, schema)?;
                    Ok(theirs)
                }
                _ => Err(LakeError::delta(name, e)),
            },
        }
    }
}

/// Adds `fields` to table `name` in one metadata commit: columns the table lacks are added,
/// a struct column given with new nested fields grows them (delta-rs merges by name). Rows
/// written before read null in what was added.
pub async fn add_columns(
    name: &str,
    table: DeltaTable,
    fields: &[deltalake::arrow::datatypes::Field],
) -> Result<DeltaTable> {
    let schema = ArrowSchema::new(fields.to_vec());
    let kernel: StructType = (&schema).try_into_kernel().map_err(|e| LakeError::Schema {
        table: name.into(),
        message: format!("cannot express the new columns in Delta: {e}"),
    })?;
    let fields: Vec<deltalake::kernel::StructField> = kernel.fields().cloned().collect();
    table
        .add_columns()
        .with_fields(fields)
        .await
        .map_err(|e| LakeError::delta(name, e))
}

fn check_schema(name: &str, table: &DeltaTable, wanted: &ArrowSchema) -> Result<()> {
    let existing = table_arrow_schema(name, table)?;
    let mut problems = Vec::new();
    for f in wanted.fields() {
        match existing.field_with_name(f.name()) {
            Err(_) => problems.push(format!("column {:?} is missing from the table", f.name())),
            Ok(e) if !types_compatible(e.data_type(), f.data_type()) => problems.push(format!(
                "column {:?} is {} in the table but {} in the config",
                f.name(),
                e.data_type(),
                f.data_type()
            )),
            Ok(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LakeError::Schema {
            table: name.into(),
            message: problems.join("; "),
        })
    }
}

fn types_compatible(
    a: &deltalake::arrow::datatypes::DataType,
    b: &deltalake::arrow::datatypes::DataType,
) -> bool {
    use deltalake::arrow::datatypes::DataType as D;
    match (a, b) {
        (D::Timestamp(u1, _), D::Timestamp(u2, _)) => u1 == u2,
        (D::Utf8 | D::LargeUtf8 | D::Utf8View, D::Utf8 | D::LargeUtf8 | D::Utf8View) => true,
        (
            D::Binary | D::LargeBinary | D::BinaryView,
            D::Binary | D::LargeBinary | D::BinaryView,
        ) => true,
        (D::List(x) | D::LargeList(x), D::List(y) | D::LargeList(y)) => {
            types_compatible(x.data_type(), y.data_type())
        }
        // Matched by name: the table may have nested fields the wanted type lacks (they
        // read null), never the other way round.
        (D::Struct(x), D::Struct(y)) => y.iter().all(|q| {
            x.iter()
                .find(|p| p.name() == q.name())
                .is_some_and(|p| types_compatible(p.data_type(), q.data_type()))
        }),
        (D::Map(x, _), D::Map(y, _)) => types_compatible(x.data_type(), y.data_type()),
        _ => a == b,
    }
}

/// The Arrow schema of a loaded table (partition columns included).
pub fn table_arrow_schema(name: &str, table: &DeltaTable) -> Result<Arc<ArrowSchema>> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoArrow as _;
    let snapshot = table.snapshot().map_err(|e| LakeError::delta(name, e))?;
    let schema: ArrowSchema =
        snapshot
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|e| LakeError::Schema {
                table: name.into(),
                message: format!("cannot read the table schema as Arrow: {e}"),
            })?;
    Ok(Arc::new(schema))
}

/// The app id under which a pipeline records its progress in a partition.
pub fn progress_app_id(pipeline: &str, topic: &str, partition: i32) -> String {
    format!("sluice:{pipeline}:{topic}:{partition}")
}

/// The app id under which a pipeline records its window clock (ms) in an aggregate table: a
/// `txn` like the progress, so that no other writer's commit can hide it.
pub fn clock_app_id(pipeline: &str) -> String {
    format!("sluice:{pipeline}:clock")
}

/// The app id of a pipeline's lease (`clock = "topic"` aggregates). In the lease table
/// ([`lease_table`]) its version is the lease's expiry (ms since the epoch; 0 once released);
/// in the pipeline's tables, the epoch of the instance holding it, written in each of its
/// commits, so that a commit of an instance whose lease was taken over is fenced.
pub fn lease_app_id(pipeline: &str) -> String {
    format!("sluice:{pipeline}:lease")
}

/// The small table that holds a pipeline's lease and its renewals.
pub fn lease_table(pipeline: &str) -> String {
    format!("_sluice_lease_{pipeline}")
}

/// The app id under which a pipeline records one source partition's window clock (ms) in an
/// aggregate table with per-partition windows (`clock = "partition"`). Topic names cannot hold
/// `:`, so it never collides with a progress app id.
pub fn partition_clock_app_id(pipeline: &str, topic: &str, partition: i32) -> String {
    format!("sluice:{pipeline}:clock:{topic}:{partition}")
}

/// The next offset recorded in `table` for an app id, if any.
pub async fn committed_progress(
    name: &str,
    table: &DeltaTable,
    app_id: &str,
) -> Result<Option<i64>> {
    let snapshot = table.snapshot().map_err(|e| LakeError::delta(name, e))?;
    snapshot
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(|e| LakeError::delta(name, e))
}
