//! The API prober: asks every API for a task list every 250 ms and records
//! each silence, from the last answer before it to the first after it. An
//! answer is any response but a 5xx other than 503: a fast 503 while the
//! store is away is an answer.

use crate::Stop;
use crate::api::{Answer, Api};
use crate::now_ms;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A time an API did not answer.
#[derive(Debug, Clone)]
pub struct Silence {
    /// Which API.
    pub api: String,
    /// Its last answer before (ms since the epoch).
    pub from_ms: u64,
    /// Its first answer after.
    pub to_ms: u64,
}

impl Silence {
    /// How long it lasted.
    pub fn ms(&self) -> u64 {
        self.to_ms.saturating_sub(self.from_ms)
    }
}

/// The running probes.
pub struct Prober {
    stop: Stop,
    silences: Arc<Mutex<Vec<Silence>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Silences shorter than this are not recorded: one missed poll.
const NOTED: Duration = Duration::from_millis(1000);

impl Prober {
    /// Starts probing every API.
    pub fn start(apis: &[Api]) -> Prober {
        let stop = Stop::default();
        let silences = Arc::new(Mutex::new(Vec::new()));
        let tasks = apis
            .iter()
            .map(|api| {
                // A probe waits at most 2 s for its answer.
                let api = Api::new(&api.name, &api.base, Duration::from_secs(2));
                let (stop, silences) = (stop.clone(), silences.clone());
                tokio::spawn(async move {
                    let mut last = now_ms();
                    // ends: when `stop` is set.
                    while !stop.is_set() {
                        let answered = match api.get("/v1/tasks?limit=1").await {
                            Answer::Json(status, _) => status < 500 || status == 503,
                            Answer::None(_) => false,
                        };
                        let now = now_ms();
                        if answered {
                            if now.saturating_sub(last) >= NOTED.as_millis() as u64 {
                                crate::cluster::lock(&silences).push(Silence {
                                    api: api.name.clone(),
                                    from_ms: last,
                                    to_ms: now,
                                });
                            }
                            last = now;
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    let now = now_ms();
                    if now.saturating_sub(last) >= NOTED.as_millis() as u64 {
                        crate::cluster::lock(&silences).push(Silence {
                            api: api.name.clone(),
                            from_ms: last,
                            to_ms: now,
                        });
                    }
                })
            })
            .collect();
        Prober {
            stop,
            silences,
            tasks,
        }
    }

    /// Stops the probes; every silence recorded.
    pub async fn stop(self) -> Vec<Silence> {
        self.stop.set();
        for task in self.tasks {
            let _ = task.await;
        }
        crate::cluster::lock(&self.silences).clone()
    }
}
