//! From what the file says ([`crate::raw`]) to the typed [`Config`]: one function per
//! section, each checking its rules and parsing its values, every problem recorded with its
//! key (none stops the others from being found).

use std::collections::{BTreeMap, BTreeSet};

use crate::raw::{RawAggregate, RawConfig, RawField, RawPipeline, RawWindow};
use crate::{
    AggregateConfig, AggregateSpec, ColumnType, Config, Duration, Envelope, FieldConfig, Format,
    KafkaConfig, LakeConfig, MaintenanceConfig, Mode, PipelineConfig, Problem,
    SchemaRegistryConfig, ServerConfig, StartPosition, TieringConfig, TimeFormat, ValueError,
    WindowKind,
};

/// The typed config of `raw`; every broken rule is appended to `problems` (the config is
/// only meaningful when none is).
pub(crate) fn config(raw: RawConfig, problems: &mut Vec<Problem>) -> Config {
    let mut c = Check {
        problems,
        tables: BTreeMap::new(),
    };
    let kafka = kafka(raw.kafka, &mut c);
    lake(&raw.lake, &mut c);
    if raw.pipelines.is_empty() && raw.tiering.is_empty() {
        c.problem(
            "pipeline",
            "no [[pipeline]] and no [[tiering]]: there is nothing to run".into(),
        );
    }
    schema_registry(&raw.schema_registry, &raw.pipelines, &mut c);
    let mut names = BTreeSet::new();
    let pipelines = raw
        .pipelines
        .into_iter()
        .enumerate()
        .map(|(i, p)| pipeline(i, p, &mut names, &mut c))
        .collect();
    tiering(&raw.tiering, &mut c);
    let config = Config {
        kafka,
        lake: raw.lake,
        pipelines,
        tiering: raw.tiering,
        maintenance: raw.maintenance,
        server: raw.server,
        schema_registry: raw.schema_registry,
    };
    let tables = config.table_names();
    maintenance(&config.maintenance, &tables, &mut c);
    server(&config.server, &mut c);
    config
}

/// Collects the problems of a validation, and which key claimed each table name.
struct Check<'a> {
    problems: &'a mut Vec<Problem>,
    tables: BTreeMap<String, String>,
}

impl Check<'_> {
    fn problem(&mut self, key: &str, message: String) {
        self.problems.push(Problem {
            key: key.into(),
            message,
        });
    }

    /// Table `table` is declared at `key`: it must be a valid name no other key took.
    fn claim(&mut self, key: String, table: &str) {
        if !valid_name(table) {
            self.problem(
                &key,
                format!("{table:?} is not a valid table name; use letters, digits and _"),
            );
        } else if let Some(prev) = self.tables.get(table) {
            let message = format!(
                "table {table:?} is already used by {prev}; every table needs its own name"
            );
            self.problem(&key, message);
        } else {
            self.tables.insert(table.to_string(), key);
        }
    }

    /// `parsed`'s value, or `fallback` with its problem recorded at `key`.
    fn value<T>(&mut self, key: &str, parsed: Result<T, ValueError>, fallback: T) -> T {
        parsed.unwrap_or_else(|e| {
            self.problem(key, e.to_string());
            fallback
        })
    }
}

/// The columns sluice adds to an events table itself: no schema field may take their names.
pub fn is_reserved_column(name: &str) -> bool {
    name.starts_with("_kafka_") || ["_event_time", "event_date", "event_hour"].contains(&name)
}

/// `[kafka]`.
fn kafka(mut kafka: KafkaConfig, c: &mut Check<'_>) -> KafkaConfig {
    if kafka.brokers.trim().is_empty() {
        c.problem(
            "kafka.brokers",
            "missing; set the bootstrap servers, e.g. brokers = \"127.0.0.1:9092\"".into(),
        );
    }
    if kafka.group_id.trim().is_empty() {
        kafka.group_id = "sluice".into();
    }
    for key in [
        "group.id",
        "bootstrap.servers",
        "enable.auto.commit",
        "enable.auto.offset.store",
    ] {
        if kafka.options.contains_key(key) {
            c.problem(
                &format!("kafka.options.{key}"),
                "is set by sluice itself; use kafka.brokers / kafka.group_id, or remove it".into(),
            );
        }
    }
    kafka
}

/// `[schema_registry]`, and what the pipelines that read through it need.
fn schema_registry(reg: &SchemaRegistryConfig, pipelines: &[RawPipeline], c: &mut Check<'_>) {
    let avro: Vec<usize> = (0..pipelines.len())
        .filter(|i| pipelines[*i].format.uses_registry())
        .collect();
    if reg.url.trim().is_empty() {
        if let Some(i) = avro.first() {
            c.problem(
                "schema_registry.url",
                format!("missing; pipeline[{i}] reads {}, whose schemas live in a registry: set url = \"http://host:8081\"", pipelines[*i].format.label()),
            );
        }
    } else {
        match url::Url::parse(reg.url.trim()) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => c.problem(
                "schema_registry.url",
                format!(
                    "scheme {:?} is not supported; use http:// or https://",
                    u.scheme()
                ),
            ),
            Err(e) => c.problem(
                "schema_registry.url",
                format!("{:?} is not a valid URL: {e}", reg.url),
            ),
        }
    }
    if reg.password.is_some() != reg.username.is_some() {
        c.problem(
            "schema_registry.username",
            "basic auth needs both username and password".into(),
        );
    }
    if reg.timeout.get() < std::time::Duration::from_millis(100) {
        c.problem("schema_registry.timeout", "must be at least 100ms".into());
    }
    for (i, p) in pipelines.iter().enumerate() {
        if p.key_format != crate::KeyFormat::Avro {
            continue;
        }
        if p.format != Format::Avro {
            c.problem(
                &format!("pipeline[{i}].key_format"),
                "Avro keys are read by Avro pipelines only for now: set format = \"avro\", or key_format = \"bytes\"".into(),
            );
        }
        if p.topics.len() > 1 && p.key_subject.is_none() {
            c.problem(
                &format!("pipeline[{i}].key_subject"),
                "Avro keys over several topics need the subject their keys share, e.g. key_subject = \"orders-key\"".into(),
            );
        }
        let column = p.key_column.trim();
        if column.is_empty() || crate::is_reserved_column(column) {
            c.problem(
                &format!("pipeline[{i}].key_column"),
                format!("{column:?} cannot hold the decoded key: name a column that is not empty and not one of sluice's own, e.g. key_column = \"key\""),
            );
        }
    }
    for i in avro {
        let p = &pipelines[i];
        if !p.schema.is_empty() {
            c.problem(
                &format!("pipeline[{i}].schema"),
                format!(
                    "a{} {} pipeline takes its columns from the registry's schema; remove schema",
                    if p.format == Format::Avro { "n" } else { "" },
                    p.format.label()
                ),
            );
        }
        if p.topics.len() > 1 && p.subject.is_none() {
            c.problem(
                &format!("pipeline[{i}].subject"),
                format!("a pipeline reading {} over several topics needs the subject their values share, e.g. subject = \"orders-value\"", p.format.label()),
            );
        }
    }
}

/// `[lake]`.
fn lake(lake: &LakeConfig, c: &mut Check<'_>) {
    if lake.root.trim().is_empty() {
        c.problem("lake.root", "missing; set where tables live, e.g. root = \"file:///var/lib/sluice/lake\" or \"s3://bucket/prefix\"".into());
    } else if let Err(e) = lake_root_url(&lake.root) {
        c.problem("lake.root", e.to_string());
    }
}

/// One `[[pipeline]]`: its names, topics and tables, its values, its schema and aggregates,
/// then the rules that read the schema.
fn pipeline(
    i: usize,
    raw: RawPipeline,
    names: &mut BTreeSet<String>,
    c: &mut Check<'_>,
) -> PipelineConfig {
    let k = |s: &str| format!("pipeline[{i}].{s}");
    names_and_tables(i, &raw, names, c);
    let start = c.value(
        &k("start"),
        StartPosition::parse(&raw.start),
        StartPosition::Earliest,
    );
    let timezone = match raw.timezone.parse::<chrono_tz::Tz>() {
        Ok(tz) => tz,
        Err(_) => {
            c.problem(
                &k("timezone"),
                format!(
                    "unknown time zone {:?}; use an IANA name such as \"UTC\" or \"Europe/Berlin\"",
                    raw.timezone
                ),
            );
            chrono_tz::UTC
        }
    };
    let schema = schema(i, &raw.schema, c);
    flush_and_sizes(i, &raw, c);
    if raw.standby_takeover.as_millis_i64() < 1000 {
        c.problem(
            &k("standby_takeover"),
            format!(
                "{}ms is too short for the active instance to renew its lease; use at least \"1s\" (default \"15s\")",
                raw.standby_takeover.as_millis_i64()
            ),
        );
    }
    let mut late_tables = BTreeSet::new();
    let aggregates = raw
        .aggregates
        .iter()
        .enumerate()
        .map(|(a, agg)| aggregate((i, a), agg, &raw.name, &mut late_tables, c))
        .collect();
    let p = PipelineConfig {
        name: raw.name,
        topics: raw.topics,
        format: raw.format,
        subject: raw.subject,
        key_format: raw.key_format,
        key_subject: raw.key_subject,
        key_column: raw.key_column,
        start,
        table: raw.table,
        dead_letter_table: raw.dead_letter_table,
        schema,
        event_time: raw.event_time,
        timezone,
        partition_by: raw.partition_by,
        flush: raw.flush,
        unknown_fields: raw.unknown_fields,
        include_headers: raw.include_headers,
        max_record_size: raw.max_record_size,
        compression: raw.compression,
        idle_timeout: raw.idle_timeout,
        standby_takeover: raw.standby_takeover,
        max_future_skew: raw.max_future_skew,
        aggregates,
        mode: raw.mode,
        key: raw.key,
        envelope: raw.envelope,
        apply: raw.apply,
    };
    check_schema_rules(i, &p, c.problems);
    changes(i, &p, c);
    p
}

/// `mode`, `key` and `envelope`: what upsert mode needs, and what only it takes.
fn changes(i: usize, p: &PipelineConfig, c: &mut Check<'_>) {
    let k = |s: &str| format!("pipeline[{i}].{s}");
    if p.mode == Mode::Append {
        if !p.key.is_empty() {
            c.problem(
                &k("key"),
                "a key is only used with mode = \"upsert\"; remove it or set the mode".into(),
            );
        }
        if p.envelope != Envelope::None {
            c.problem(
                &k("envelope"),
                "an envelope is only read with mode = \"upsert\"; remove it or set the mode".into(),
            );
        }
        return;
    }
    if p.key.is_empty() {
        c.problem(
            &k("key"),
            "upsert mode needs the primary key columns, e.g. key = [\"id\"]".into(),
        );
    }
    let mut seen = BTreeSet::new();
    for col in &p.key {
        if !seen.insert(col) {
            c.problem(&k("key"), format!("column {col:?} is named twice"));
        } else if !p.schema.is_empty() && !p.schema.iter().any(|f| &f.name == col) {
            let names: Vec<&str> = p.schema.iter().map(|f| f.name.as_str()).collect();
            c.problem(
                &k("key"),
                format!("{col:?} is not a column of the schema; columns: {names:?}"),
            );
        }
    }
    if p.format == Format::Json && p.schema.is_empty() {
        c.problem(
            &k("schema"),
            "upsert mode reads JSON into declared columns (the key's types decide how keys compare); add a schema".into(),
        );
    }
    if !p.aggregates.is_empty() {
        c.problem(
            &k("aggregate"),
            "windowed aggregates read an append stream; put them on an append pipeline over the same topics".into(),
        );
    }
    if p.envelope == Envelope::Debezium && p.format != Format::Json {
        c.problem(
            &k("envelope"),
            format!(
                "the debezium envelope is read from JSON records; this pipeline's format is {}",
                p.format.label()
            ),
        );
    }
}

/// A pipeline's name, topics and tables.
fn names_and_tables(i: usize, pl: &RawPipeline, names: &mut BTreeSet<String>, c: &mut Check<'_>) {
    let k = |s: &str| format!("pipeline[{i}].{s}");
    if pl.name.is_empty() {
        c.problem(
            &k("name"),
            "missing; every pipeline needs a unique name".into(),
        );
    } else if !valid_name(&pl.name) {
        c.problem(
            &k("name"),
            format!(
                "{:?} is not a valid name; use letters, digits and _",
                pl.name
            ),
        );
    } else if !names.insert(pl.name.clone()) {
        c.problem(
            &k("name"),
            format!("{:?} is used by another pipeline", pl.name),
        );
    }
    if pl.topics.is_empty() {
        c.problem(
            &k("topics"),
            "missing; list the source topics, e.g. topics = [\"clicks\"]".into(),
        );
    }
    for (j, t) in pl.topics.iter().enumerate() {
        if t.is_empty()
            || t.len() > 249
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            c.problem(
                &k(&format!("topics[{j}]")),
                format!("{t:?} is not a valid Kafka topic name"),
            );
        }
    }
    if pl.table.is_empty() {
        c.problem(
            &k("table"),
            "missing; name the events table, e.g. table = \"clicks\"".into(),
        );
    } else {
        c.claim(k("table"), &pl.table);
    }
    let dead_letter = pl
        .dead_letter_table
        .clone()
        .unwrap_or_else(|| format!("{}_dead_letter", pl.name));
    c.claim(k("dead_letter_table"), &dead_letter);
}

/// A pipeline's flush policy and record size.
fn flush_and_sizes(i: usize, pl: &RawPipeline, c: &mut Check<'_>) {
    let k = |s: &str| format!("pipeline[{i}].{s}");
    if pl.flush.max_rows == 0 {
        c.problem(&k("flush.max_rows"), "must be at least 1".into());
    }
    if pl.flush.max_bytes.bytes() < 1024 {
        c.problem(
            &k("flush.max_bytes"),
            format!(
                "{} is too small; use at least 1KiB (e.g. \"128MiB\")",
                pl.flush.max_bytes
            ),
        );
    }
    if pl.flush.max_latency.get() < std::time::Duration::from_millis(10) {
        c.problem(&k("flush.max_latency"), "must be at least 10ms".into());
    }
    if pl.max_record_size.bytes() == 0 {
        c.problem(&k("max_record_size"), "must be at least 1B".into());
    }
}

/// A pipeline's `schema`: names (none reserved, none twice) and types.
fn schema(i: usize, fields: &[RawField], c: &mut Check<'_>) -> Vec<FieldConfig> {
    // An empty schema means: take the columns of the existing events table (checked when the
    // pipeline opens its tables, with [`PipelineConfig::with_schema`]).
    let mut cols = BTreeSet::new();
    let mut out = Vec::with_capacity(fields.len());
    for (j, f) in fields.iter().enumerate() {
        let fk = format!("pipeline[{i}].schema[{j}]");
        if f.name.is_empty() {
            c.problem(&format!("{fk}.name"), "missing".into());
        } else if is_reserved_column(&f.name) {
            c.problem(
                &format!("{fk}.name"),
                format!(
                    "{:?} is a column sluice adds itself; rename the field",
                    f.name
                ),
            );
        } else if !cols.insert(f.name.clone()) {
            c.problem(
                &format!("{fk}.name"),
                format!("column {:?} appears twice", f.name),
            );
        }
        let ty = c.value(
            &format!("{fk}.type"),
            ColumnType::parse(&f.type_name),
            ColumnType::String,
        );
        if f.format.is_some() && ty != ColumnType::Timestamp {
            c.problem(
                &format!("{fk}.format"),
                "only timestamp columns take a format".into(),
            );
        }
        out.push(FieldConfig {
            name: f.name.clone(),
            ty,
            nullable: f.nullable.unwrap_or(true),
            format: f.format,
        });
    }
    out
}

/// One `[[pipeline.aggregate]]` of a pipeline named `pl_name`: its tables, its window and
/// its aggregates.
fn aggregate(
    (i, a): (usize, usize),
    agg: &RawAggregate,
    pl_name: &str,
    late_tables: &mut BTreeSet<String>,
    c: &mut Check<'_>,
) -> AggregateConfig {
    let ak = |s: &str| format!("pipeline[{i}].aggregate[{a}].{s}");
    if agg.table.is_empty() {
        c.problem(&ak("table"), "missing; name the aggregate table".into());
    } else {
        c.claim(ak("table"), &agg.table);
    }
    let late = agg
        .late_table
        .clone()
        .unwrap_or_else(|| format!("{pl_name}_late"));
    if late_tables.insert(late.clone()) {
        c.claim(ak("late_table"), &late);
    }
    let window = match window(&agg.window) {
        Ok(w) => w,
        Err((key, msg)) => {
            c.problem(&ak(&format!("window.{key}")), msg);
            WindowKind::Tumbling { size: 1, offset: 0 }
        }
    };
    if agg.aggregates.is_empty() {
        c.problem(
            &ak("aggregates"),
            "missing; e.g. aggregates = [\"count(*) AS events\"]".into(),
        );
    }
    let mut specs = Vec::new();
    for (g, text) in agg.aggregates.iter().enumerate() {
        match AggregateSpec::parse(text) {
            Ok(spec) => specs.push(spec),
            Err(e) => c.problem(&ak(&format!("aggregates[{g}]")), e.to_string()),
        }
    }
    if agg.clock == crate::WindowClock::Partition {
        let names = agg.group_by.iter().chain(specs.iter().map(|s| &s.alias));
        for name in names.filter(|n| n.starts_with("_kafka_") || n.starts_with("_n_")) {
            c.problem(
                &ak("clock"),
                format!(
                    "with clock = \"partition\" the rows carry _kafka_topic, _kafka_partition and _n_<alias> weights; rename the column {name:?}"
                ),
            );
        }
    }
    AggregateConfig {
        table: agg.table.clone(),
        window,
        grace: agg.grace,
        group_by: agg.group_by.clone(),
        aggregates: specs,
        late_table: agg.late_table.clone(),
        clock: agg.clock,
    }
}

/// A window's kind and sizes; on error, the key under `window` and what is wrong.
fn window(w: &RawWindow) -> Result<WindowKind, (&'static str, String)> {
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis_i64());
    let offset = ms(w.offset).unwrap_or(0);
    match w.kind.as_str() {
        "tumbling" => {
            let size = ms(w.size).filter(|s| *s > 0).ok_or((
                "size",
                "tumbling windows need size > 0, e.g. size = \"1m\"".to_string(),
            ))?;
            Ok(WindowKind::Tumbling { size, offset })
        }
        "hopping" => {
            let size = ms(w.size)
                .filter(|s| *s > 0)
                .ok_or(("size", "hopping windows need size > 0".to_string()))?;
            let advance = ms(w.advance).ok_or((
                "advance",
                "hopping windows need advance, with 0 < advance <= size".to_string(),
            ))?;
            if advance <= 0 || advance > size {
                return Err((
                    "advance",
                    format!("needs 0 < advance <= size (got advance {advance}ms, size {size}ms)"),
                ));
            }
            Ok(WindowKind::Hopping {
                size,
                advance,
                offset,
            })
        }
        "session" => {
            let gap = ms(w.gap).filter(|g| *g > 0).ok_or((
                "gap",
                "session windows need gap > 0, e.g. gap = \"30m\"".to_string(),
            ))?;
            Ok(WindowKind::Session { gap })
        }
        "" => Err(("kind", "missing; use tumbling, hopping or session".into())),
        other => Err((
            "kind",
            format!(
                "unknown window kind {other:?}; use tumbling, hopping or session (sliding windows are hopping windows)"
            ),
        )),
    }
}

/// The rules that read a pipeline's schema (the event time field, partition columns, the
/// columns aggregates read and group by); none applies while the schema is unknown (empty).
pub(crate) fn check_schema_rules(i: usize, pl: &PipelineConfig, problems: &mut Vec<Problem>) {
    let mut c = Check {
        problems,
        tables: BTreeMap::new(),
    };
    event_time(i, pl, &mut c);
    if pl.schema.is_empty() {
        return;
    }
    let k = |s: &str| format!("pipeline[{i}].{s}");
    for (j, col) in pl.partition_by.iter().enumerate() {
        let known = col == "event_date"
            || col == "event_hour"
            || pl
                .schema
                .iter()
                .any(|f| &f.name == col && f.ty.is_primitive());
        if !known {
            c.problem(
                &k(&format!("partition_by[{j}]")),
                format!(
                    "{col:?} is neither event_date, event_hour nor a top-level primitive column"
                ),
            );
        }
    }
    let has = |col: &str| pl.schema.iter().any(|f| f.name == col);
    for (a, agg) in pl.aggregates.iter().enumerate() {
        let ak = |s: &str| format!("pipeline[{i}].aggregate[{a}].{s}");
        for (g, col) in agg.group_by.iter().enumerate() {
            if !has(col)
                && !col.starts_with("_kafka_")
                && col != "event_date"
                && col != "event_hour"
            {
                c.problem(
                    &ak(&format!("group_by[{g}]")),
                    format!("{col:?} is not a column of the pipeline's schema"),
                );
            }
        }
        for (g, spec) in agg.aggregates.iter().enumerate() {
            if let Some(col) = &spec.column
                && !has(col)
            {
                c.problem(
                    &ak(&format!("aggregates[{g}]")),
                    format!("{col:?} is not a column of the pipeline's schema"),
                );
            }
        }
    }
}

/// A pipeline's `event_time`: a field of a type that can hold the format.
fn event_time(i: usize, pl: &PipelineConfig, c: &mut Check<'_>) {
    let k = |s: &str| format!("pipeline[{i}].{s}");
    match (&pl.event_time.format, &pl.event_time.field) {
        (TimeFormat::KafkaTimestamp, Some(_)) => c.problem(
            &k("event_time.field"),
            "kafka_timestamp takes no field; remove it or pick another format".into(),
        ),
        (TimeFormat::KafkaTimestamp, None) => {}
        (_, None) => c.problem(
            &k("event_time.field"),
            "missing; name the payload field holding the event time".into(),
        ),
        (_, Some(_)) if pl.schema.is_empty() => {}
        (fmt, Some(field)) => match pl.schema.iter().find(|f| &f.name == field) {
            None => c.problem(
                &k("event_time.field"),
                format!("{field:?} is not a column of the schema"),
            ),
            Some(f) => {
                let ok = match f.ty {
                    ColumnType::Timestamp | ColumnType::String => true,
                    ColumnType::Long | ColumnType::Integer | ColumnType::Double => {
                        *fmt != TimeFormat::Rfc3339
                    }
                    _ => false,
                };
                if !ok {
                    c.problem(
                        &k("event_time.field"),
                        format!(
                            "column {field:?} cannot hold a {fmt:?} time; use timestamp, string, long or double"
                        ),
                    );
                }
            }
        },
    }
}
fn tiering(tiering: &[TieringConfig], c: &mut Check<'_>) {
    let mut tiered = BTreeSet::new();
    for (i, t) in tiering.iter().enumerate() {
        let k = |s: &str| format!("tiering[{i}].{s}");
        if t.topic.is_empty() {
            c.problem(&k("topic"), "missing; name the topic to tier".into());
        } else if !tiered.insert(t.topic.clone()) {
            c.problem(&k("topic"), format!("topic {:?} is tiered twice", t.topic));
        }
        c.claim(k("archive_table"), &t.archive_table());
        if t.interval.get() < std::time::Duration::from_millis(100) {
            c.problem(&k("interval"), "must be at least 100ms".into());
        }
        if t.max_records_per_round == 0 {
            c.problem(&k("max_records_per_round"), "must be at least 1".into());
        }
    }
}

/// `[maintenance]`; `tables` are the config's table names.
fn maintenance(maintenance: &MaintenanceConfig, tables: &[String], c: &mut Check<'_>) {
    for (t, cols) in &maintenance.zorder_by {
        if !tables.contains(t) {
            c.problem(
                &format!("maintenance.zorder_by.{t}"),
                format!("{t:?} is not a table of this config"),
            );
        } else if cols.is_empty() {
            c.problem(
                &format!("maintenance.zorder_by.{t}"),
                "list at least one column".into(),
            );
        }
    }
    if maintenance.checkpoint_interval == 0 {
        c.problem(
            "maintenance.checkpoint_interval",
            "must be at least 1 (commits between checkpoints)".into(),
        );
    }
    if maintenance.vacuum_retention_check
        && maintenance.vacuum_retention.get() < std::time::Duration::from_secs(3600)
    {
        c.problem(
            "maintenance.vacuum_retention",
            format!(
                "{:?} is under 1 hour: files a running reader or backfill still needs could be deleted; use at least \"1h\" (default \"7d\"), or set maintenance.vacuum_retention_check = false to allow it",
                maintenance.vacuum_retention.get()
            ),
        );
    }
    if maintenance.target_file_size.bytes() < 1024 {
        c.problem(
            "maintenance.target_file_size",
            "too small; use at least 1KiB (e.g. \"128MiB\")".into(),
        );
    }
}

/// `[server]`.
fn server(server: &ServerConfig, c: &mut Check<'_>) {
    if !server.listen.is_empty() && server.listen.parse::<std::net::SocketAddr>().is_err() {
        c.problem(
            "server.listen",
            format!(
                "{:?} is not an address; use host:port such as \"127.0.0.1:9464\", or \"\" to disable",
                server.listen
            ),
        );
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Normalizes `lake.root` to a URL: plain paths become `file://` URLs.
pub fn lake_root_url(root: &str) -> Result<url::Url, ValueError> {
    let root = root.trim();
    if root.contains("://") {
        let mut u = url::Url::parse(root)
            .map_err(|e| ValueError::new(format!("{root:?} is not a valid URL: {e}")))?;
        match u.scheme() {
            "file" | "s3" | "s3a" | "memory" | "az" | "azure" | "abfs" | "abfss" | "gs" => {}
            other => {
                return Err(ValueError::new(format!(
                    "scheme {other:?} is not supported; use file://, s3://, az:// (or abfss://) or gs://"
                )));
            }
        }
        if !u.path().ends_with('/') {
            let p = format!("{}/", u.path());
            u.set_path(&p);
        }
        Ok(u)
    } else {
        let path =
            std::path::absolute(root).map_err(|e| ValueError::new(format!("{root:?}: {e}")))?;
        url::Url::from_directory_path(&path)
            .map_err(|_| ValueError::new(format!("{root:?} is not a usable directory path")))
    }
}
