//! Completion events as an outside consumer sees them: a group of its own
//! on the result topic, from the earliest offset, for the whole soak.

use crate::Stop;
use dts_bus::Bus;
use dts_bus::kafka::{KafkaBus, KafkaSettings};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The result topic (`pubsub.result.topic`'s default, which the soak's
/// nodes keep).
pub const RESULT_TOPIC: &str = "distributed_task_completed";

/// One completion event: the status it announced and the `finishedAt`
/// it carried (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `status`.
    pub status: String,
    /// `finishedAt`, when it parses.
    pub finished_ms: Option<u64>,
}

/// Each task's events, in the order they came.
pub type Events = BTreeMap<String, Vec<Event>>;

/// The running consumer.
pub struct Collector {
    stop: Stop,
    events: Arc<Mutex<Events>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// Starts reading the result topic of the broker at `bootstrap`.
    pub fn start(bootstrap: String) -> Collector {
        let stop = Stop::default();
        let events = Arc::new(Mutex::new(Events::new()));
        let (stop2, events2) = (stop.clone(), events.clone());
        let task = tokio::spawn(async move { consume(bootstrap, stop2, events2).await });
        Collector { stop, events, task }
    }

    /// The events so far, without stopping.
    pub fn snapshot(&self) -> Events {
        crate::cluster::lock(&self.events).clone()
    }

    /// Stops reading; every event read.
    pub async fn stop(self) -> Events {
        self.stop.set();
        let _ = self.task.await;
        crate::cluster::lock(&self.events).clone()
    }
}

async fn consume(bootstrap: String, stop: Stop, events: Arc<Mutex<Events>>) {
    let mut settings = KafkaSettings::new(bootstrap);
    settings.client = crate::cluster::client_settings()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let group = format!("dts-chaos-{}", std::process::id());
    // ends: when `stop` is set (each wait is at most a second).
    while !stop.is_set() {
        let bus = match KafkaBus::connect(settings.clone()).await {
            Ok(bus) => bus,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut subscription = match bus.subscribe(RESULT_TOPIC, &group).await {
            Ok(subscription) => subscription,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // ends: when `stop` is set.
        while !stop.is_set() {
            let Ok(next) = tokio::time::timeout(Duration::from_secs(1), subscription.next()).await
            else {
                continue;
            };
            let Ok(delivery) = next else {
                // The broker went away: a new connection when it is back.
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            if let Ok(event) = serde_json::from_slice::<serde_json::Value>(&delivery.payload) {
                if let (Some(task), Some(status)) =
                    (event["taskId"].as_str(), event["status"].as_str())
                {
                    let finished_ms = event["finishedAt"]
                        .as_str()
                        .and_then(|at| humantime::parse_rfc3339(at).ok())
                        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|since| since.as_millis() as u64);
                    crate::cluster::lock(&events)
                        .entry(task.to_string())
                        .or_default()
                        .push(Event {
                            status: status.to_string(),
                            finished_ms,
                        });
                }
            }
            let _ = delivery.ack().await;
        }
        bus.shutdown(Duration::from_secs(5)).await;
    }
}
