//! The outputs a run can add beyond its main one: a flow lake (flows and edges as Parquet), a
//! dependency policy, and (on Kafka) topics for edges and change events. Shared by `demo`,
//! `collect` and `replay`, so the flags mean the same everywhere.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use flowmap_kafka::Producer;
use flowmap_lake::{EdgeRow, EventRow, FlowRow, Lake, LakeConfig, LakeSettings};

use crate::edges::Policy;
use crate::kafka::KafkaSink;
use crate::lake::{LakeSink, LakeTotals};
use crate::run::{Outputs, SinkFactory};
use crate::sink::{FlowSink, Sink, Tee};

/// The lake and policy flags.
#[derive(Debug, Clone, Default, Args)]
pub struct LakeArgs {
    /// Write flows and edges to a flow lake: a local directory or `s3://BUCKET[/PREFIX]`
    /// (Hive-partitioned Parquet; see lake/README.md). Default settings, or those of
    /// `--lake-config`.
    #[arg(long)]
    pub lake: Option<String>,
    /// Lake settings (TOML, see lake/lake.toml: location, endpoint, region, cell,
    /// max_rows_per_file, compression); `--lake` overrides its location.
    #[arg(long)]
    pub lake_config: Option<PathBuf>,
    /// A dependency policy (TOML, see configs/policy.toml): edges it does not allow are
    /// reported as policy violations (change events).
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

impl LakeArgs {
    /// The lake's settings, if one is asked for.
    ///
    /// # Errors
    /// An unreadable or invalid settings file or location.
    pub fn settings(&self) -> Result<Option<LakeSettings>> {
        let mut config = match &self.lake_config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                LakeConfig::from_toml(&text).with_context(|| format!("lake settings {}", path.display()))?
            }
            None => match &self.lake {
                Some(location) => LakeConfig::at(location),
                None => return Ok(None),
            },
        };
        if let Some(location) = &self.lake {
            config.location.clone_from(location);
        }
        Ok(Some(config.validate().context("lake settings")?))
    }

    /// The policy, if one is given.
    ///
    /// # Errors
    /// An unreadable or invalid policy file.
    pub fn policy(&self) -> Result<Option<Policy>> {
        Ok(self.policy.as_deref().map(Policy::load).transpose()?)
    }

    /// Opens the lake, if one is asked for.
    ///
    /// # Errors
    /// Invalid settings, or a store that cannot be opened.
    pub fn open(&self) -> Result<Option<Lake>> {
        match self.settings()? {
            Some(settings) => {
                let lake = Lake::open(&settings).context("opening the lake")?;
                Ok(Some(lake))
            }
            None => Ok(None),
        }
    }
}

/// The Kafka topics for flows, edges and change events (`None`: not written).
pub type KafkaTopics = (Option<String>, Option<String>, Option<String>);

/// Where each kind of output goes, for one process.
#[derive(Clone, Default)]
pub struct Destinations {
    /// Kafka: the producer (one per process) and the topics for flows, edges, change events.
    pub kafka: Option<(Producer, KafkaTopics)>,
    /// The lake, and where its writers leave their counters.
    pub lake: Option<(Lake, LakeTotals)>,
    /// The map's in-memory source (`--serve`).
    pub map: Option<Arc<flowmap_serve::MemorySource>>,
}

impl Destinations {
    /// Whether anything is written at all.
    pub fn any(&self) -> bool {
        self.kafka.is_some() || self.lake.is_some() || self.map.is_some()
    }

    /// The per-worker sinks.
    pub fn factory(self) -> SinkFactory {
        Arc::new(move |index, peers| {
            let mut flows: Vec<Box<FlowSink>> = Vec::new();
            let mut edges: Vec<Box<dyn Sink<flowmap_schema::Edge>>> = Vec::new();
            let mut events: Vec<Box<dyn Sink<flowmap_schema::Event>>> = Vec::new();
            if let Some((producer, (flow_topic, edge_topic, event_topic))) = &self.kafka {
                if let Some(t) = flow_topic {
                    flows.push(Box::new(KafkaSink::from_producer(producer.clone(), t)));
                }
                if let Some(t) = edge_topic {
                    edges.push(Box::new(KafkaSink::from_producer(producer.clone(), t)));
                }
                if let Some(t) = event_topic {
                    events.push(Box::new(KafkaSink::from_producer(producer.clone(), t)));
                }
            }
            if let Some((lake, totals)) = &self.lake {
                flows.push(Box::new(LakeSink::<FlowRow>::new(lake, index, peers, Arc::clone(totals))?));
                edges.push(Box::new(LakeSink::<EdgeRow>::new(lake, index, peers, Arc::clone(totals))?));
                events.push(Box::new(LakeSink::<EventRow>::new(lake, index, peers, Arc::clone(totals))?));
            }
            if let Some(map) = &self.map {
                edges.push(Box::new(super::serve::MapEdges(Arc::clone(map))));
                events.push(Box::new(super::serve::MapEvents(Arc::clone(map))));
            }
            Ok(Outputs { flows: tee(flows), edges: tee(edges), events: tee(events) })
        })
    }
}

fn tee<T: 'static>(mut sinks: Vec<Box<dyn Sink<T>>>) -> Option<Box<dyn Sink<T>>> {
    match sinks.len() {
        0 => None,
        1 => sinks.pop(),
        _ => Some(Box::new(Tee(sinks))),
    }
}

/// One line about what the lake's writers wrote (summed over this process's workers).
pub fn lake_line(totals: &LakeTotals) -> String {
    let Ok(totals) = totals.lock() else { return "lake: counters unavailable".into() };
    let mut parts = Vec::new();
    for table in ["flows", "edges", "events"] {
        let of = totals.iter().filter(|(t, _)| *t == table).map(|(_, s)| s);
        let (mut rows, mut files, mut bytes, mut dups) = (0u64, 0u64, 0u64, 0u64);
        for s in of {
            rows += s.rows_written;
            files += s.files_written;
            bytes += s.bytes_written;
            dups += s.duplicates;
        }
        parts.push(format!(
            "{table}: {rows} rows in {files} files ({:.1} MiB), {dups} re-emitted rows dropped",
            bytes as f64 / 1048576.0
        ));
    }
    format!("lake: {}", parts.join("; "))
}
