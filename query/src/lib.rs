//! SQL re-queries over the lake: a DataFusion session with every table of a config registered
//! under its name, optionally as of a version or a time, and every topic as one table across
//! both tiers (`kafka.<topic>`, see [`topic`]).

pub mod merged;
pub mod topic;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

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
    /// A broker or store behind a topic table could not be read.
    #[error("{what}: {message}")]
    Source {
        /// Which topic, broker or store.
        what: String,
        /// What went wrong.
        message: String,
    },
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
#[derive(Clone, Debug, Default)]
pub enum AsOf {
    /// The latest version.
    #[default]
    Latest,
    /// One table at one of its versions (a version number belongs to one table); every other
    /// table at its latest. A table without that version is an error.
    TableVersion {
        /// The table.
        table: String,
        /// Its version.
        version: i64,
    },
    /// Every table at the version current at this time (ms since the epoch); a table that did
    /// not exist then is left out.
    Time(i64),
}

/// A DataFusion session over the tables of a config.
pub struct QuerySession {
    ctx: SessionContext,
    tables: Vec<String>,
    /// Topic tables that can be registered on first use, and what they need.
    topics: BTreeMap<String, topic::TopicSpec>,
    source: Option<(sluice_config::Config, Lake)>,
    registered_topics: Mutex<BTreeSet<String>>,
    /// The registered tables, at the version registered.
    handles: BTreeMap<String, DeltaTable>,
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
        let mut handles = BTreeMap::new();
        if let AsOf::TableVersion { table, .. } = &as_of
            && !names.contains(table)
        {
            return Err(QueryError::Sql {
                message: format!(
                    "--table {table:?} is not a table of the config; its tables are: {}",
                    names.join(", ")
                ),
            });
        }
        for name in names {
            let Some(mut table) = lake.open(name).await? else {
                continue;
            };
            match &as_of {
                AsOf::Latest => {}
                AsOf::TableVersion { table: t, version } if t == name => {
                    table = lake.open_at_version(name, *version).await.map_err(|e| {
                        QueryError::Sql {
                            message: format!(
                                "table {name} has no version {version} (its latest is {}): {e}",
                                table.version().map_or("none".into(), |v| v.to_string())
                            ),
                        }
                    })?;
                }
                AsOf::TableVersion { .. } => {}
                AsOf::Time(ms) => {
                    if let Some(at) = chrono::DateTime::from_timestamp_millis(*ms)
                        && let Err(e) = table.load_with_datetime(at).await
                    {
                        tracing::warn!(table = %name, "no version at {at} ({e}): the table is left out");
                        continue;
                    }
                }
            }
            register(&ctx, name, &table).await?;
            tables.push(name.clone());
            handles.insert(name.clone(), table);
        }
        Ok(Self {
            ctx,
            tables,
            topics: BTreeMap::new(),
            source: None,
            registered_topics: Mutex::new(BTreeSet::new()),
            handles,
        })
    }

    /// Every table of `config`, plus a topic table `kafka.<topic>` for every tiered topic and
    /// every topic a pipeline reads (registered when a statement first uses it).
    pub async fn for_config(
        config: &sluice_config::Config,
        lake: &Lake,
        as_of: AsOf,
    ) -> Result<Self> {
        let mut s = Self::new(lake, &config.table_names(), as_of).await?;
        s.topics = topic::topics_of(config);
        s.source = Some((config.clone(), lake.clone()));
        s.register_merged_views(config).await?;
        Ok(s)
    }

    /// `<table>_merged` for every registered aggregate table with per-partition windows
    /// ([`merged`]), as of the version registered.
    async fn register_merged_views(&mut self, config: &sluice_config::Config) -> Result<()> {
        for (p, agg) in merged::partition_aggregates(config) {
            let Some(table) = self.handles.get(&agg.table) else {
                continue;
            };
            let line = merged::final_line(p, agg, table).await?;
            let view = merged::view_name(&agg.table);
            let sql = format!("CREATE VIEW \"{view}\" AS {}", merged::view_sql(agg, line));
            self.ctx.sql(&sql).await.map_err(|e| QueryError::Sql {
                message: format!("view {view}: {e}"),
            })?;
            self.tables.push(view);
        }
        Ok(())
    }

    /// The names a statement can use: tables, then topic tables.
    pub fn known_names(&self) -> Vec<String> {
        let mut out = self.tables.clone();
        out.extend(
            self.topics
                .keys()
                .map(|t| format!("{}.{t}", topic::TOPIC_SCHEMA)),
        );
        out
    }

    /// Registers the topic tables `sql` refers to that are not registered yet.
    async fn register_topics_of(&self, sql: &str) -> Result<()> {
        let Some((config, lake)) = &self.source else {
            return Ok(());
        };
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        // A statement that does not parse fails below with DataFusion's own message.
        let Ok(statement) = state.sql_to_statement(sql, &dialect) else {
            return Ok(());
        };
        let Ok(refs) = state.resolve_table_references(&statement) else {
            return Ok(());
        };
        for r in refs {
            if r.schema() != Some(topic::TOPIC_SCHEMA) {
                continue;
            }
            let name = r.table().to_string();
            let Some(spec) = self.topics.get(&name) else {
                return Err(QueryError::Sql {
                    message: format!(
                        "no topic table {}.{name}: known tables: {}",
                        topic::TOPIC_SCHEMA,
                        self.known_names().join(", ")
                    ),
                });
            };
            let fresh = self
                .registered_topics
                .lock()
                .map(|mut s| s.insert(name.clone()))
                .unwrap_or(false);
            if fresh {
                topic::register_topic(&self.ctx, config, lake, spec, &self.tables).await?;
            }
        }
        Ok(())
    }

    /// The registered table names.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    /// Runs one SQL statement.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let err = |e: sluice_lake::deltalake::datafusion::error::DataFusionError| {
            use sluice_lake::deltalake::datafusion::error::DataFusionError as E;
            let mut message = e.to_string();
            // A name the plan cannot resolve (a table, a column): list the tables.
            if matches!(e.find_root(), E::Plan(_) | E::SchemaError(..)) {
                message.push_str(&format!(
                    "; known tables: {}",
                    self.known_names().join(", ")
                ));
            }
            QueryError::Sql { message }
        };
        self.register_topics_of(sql).await?;
        let df = self.ctx.sql(sql).await.map_err(err)?;
        df.collect().await.map_err(err)
    }
}

pub(crate) async fn register(ctx: &SessionContext, name: &str, table: &DeltaTable) -> Result<()> {
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
