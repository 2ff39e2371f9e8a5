//! Topic administration: creating the topics stepview needs, and listing a topic's partitions.

use super::client::client_config;
use crate::kafka::KafkaSettings;
use anyhow::{Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::error::RDKafkaErrorCode;
use std::time::Duration;

/// Partitions a topic gets when stepview creates it.
pub const DEFAULT_PARTITIONS: i32 = 4;

/// Largest message the topics stepview creates take (events over stepview's 1 MiB limit
/// included: the dead-letter topic must take them unchanged).
pub const TOPIC_MESSAGE_MAX_BYTES: &str = "67108864";

/// Creates the topics that do not exist yet.
pub async fn ensure_topics(cfg: &KafkaSettings, topics: &[&str], partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(cfg, &[])
        .create()
        .context("cannot create Kafka admin client")?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            NewTopic::new(t, partitions, TopicReplication::Fixed(1))
                .set("max.message.bytes", TOPIC_MESSAGE_MAX_BYTES)
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(&new, &opts).await.with_context(|| {
        format!(
            "cannot reach Kafka at {} (is the broker running? ops/broker.sh start)",
            cfg.brokers
        )
    })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Creates the members topic (cluster.md) when missing: compacted, one partition.
pub async fn ensure_members_topic(cfg: &KafkaSettings, topic: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(cfg, &[])
        .create()
        .context("cannot create Kafka admin client")?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.ms", "60000");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&new], &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// The partition ids of `topic`, from the brokers' metadata, ascending.
pub fn partitions<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
    let mut ids: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    ids.sort_unstable();
    anyhow::ensure!(
        !ids.is_empty(),
        "topic {topic} has no partitions (does it exist?)"
    );
    Ok(ids)
}
