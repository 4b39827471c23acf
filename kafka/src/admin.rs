//! Topic administration: create topics if they are missing, read partition counts.
//!
//! Tests and demos create their own topics (the development broker does not create topics on
//! first use), and the job reads partition counts to split partitions between its workers.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::{ClientSettings, ConfigError};

/// A failure to administer topics.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker refused or did not answer.
    #[error("{what} failed (brokers {brokers})")]
    Kafka {
        /// What was being done.
        what: String,
        /// The bootstrap addresses.
        brokers: String,
        /// librdkafka's error.
        #[source]
        source: Box<KafkaError>,
    },
    /// The topic does not exist.
    #[error("topic '{topic}' does not exist on {brokers}")]
    NoTopic {
        /// The topic.
        topic: String,
        /// The bootstrap addresses.
        brokers: String,
    },
}

fn kafka(what: impl Into<String>, client: &ClientSettings) -> impl FnOnce(KafkaError) -> AdminError + '_ {
    let what = what.into();
    move |source| AdminError::Kafka { what, brokers: client.brokers.clone(), source: Box::new(source) }
}

/// Creates each `(topic, partitions)` that does not exist yet. Existing topics are left as
/// they are (their partition count is not changed).
pub fn ensure_topics(client: &ClientSettings, topics: &[(&str, i32)], timeout: Duration) -> Result<(), AdminError> {
    client.validate()?;
    let admin: AdminClient<DefaultClientContext> =
        client.client_config().create().map_err(kafka("creating an admin client", client))?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|(name, n)| NewTopic::new(name, *n, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
    let results =
        futures_executor::block_on(admin.create_topics(&new, &options)).map_err(kafka("creating topics", client))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(AdminError::Kafka {
                    what: format!("creating topic '{topic}'"),
                    brokers: client.brokers.clone(),
                    source: Box::new(KafkaError::AdminOp(code)),
                })
            }
        }
    }
    Ok(())
}

/// How many partitions `topic` has.
pub fn partition_count(client: &ClientSettings, topic: &str, timeout: Duration) -> Result<i32, AdminError> {
    client.validate()?;
    let consumer: BaseConsumer = client.client_config().create().map_err(kafka("creating a client", client))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(kafka(format!("reading metadata of '{topic}'"), client))?;
    let no_topic = || AdminError::NoTopic { topic: topic.to_string(), brokers: client.brokers.clone() };
    let t = metadata.topics().iter().find(|t| t.name() == topic).ok_or_else(no_topic)?;
    if t.error().is_some() || t.partitions().is_empty() {
        return Err(no_topic());
    }
    Ok(t.partitions().len() as i32)
}
