//! What the Kafka bus promises beyond the bus contract: where offsets are
//! committed, redelivery in a running member and after a member leaves,
//! topic creation, and how it fails when the broker is not there. Every test
//! starts its own broker (tansu, from dts-testkit) on a free port.

use dts_bus::kafka::{KafkaBus, KafkaSettings};
use dts_bus::{Bus, BusError, Delivery, Subscription};
use dts_testkit::Broker;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Long enough for a group join and a rebalance on tansu with the test
/// settings (each JoinGroup is held for half the 3 s session timeout).
const WAIT: Duration = Duration::from_secs(45);

fn settings(broker: &Broker) -> KafkaSettings {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut settings = KafkaSettings::new(broker.bootstrap());
    settings.client = Broker::client_settings()
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    settings
}

/// A bus on `broker` whose start-up creates `topic` with `partitions`.
async fn bus_with_topic(broker: &Broker, topic: &str, partitions: u32) -> KafkaBus {
    let mut settings = settings(broker);
    settings.partitions = partitions;
    settings.topics = vec![topic.to_string()];
    KafkaBus::connect(settings).await.expect("connect")
}

/// Lets the bus's group members leave while the broker is still up.
async fn stop(bus: KafkaBus, broker: Broker) {
    assert!(
        bus.shutdown(Duration::from_secs(10)).await,
        "members left their groups"
    );
    drop(broker);
}

async fn next(sub: &mut Box<dyn Subscription>) -> Delivery {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a delivery within the deadline")
        .expect("a delivery")
}

fn text(delivery: &Delivery) -> String {
    String::from_utf8(delivery.payload.clone()).expect("utf-8 payload")
}

/// Every delivery until none comes for `idle`, none acknowledged; fails
/// if deliveries keep coming past [`WAIT`].
async fn drain(sub: &mut Box<dyn Subscription>, idle: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while let Ok(delivery) = tokio::time::timeout(idle, sub.next()).await {
        got.push(delivery.expect("a delivery"));
        assert!(
            Instant::now() < deadline,
            "deliveries kept coming for {WAIT:?}: {} so far",
            got.len()
        );
    }
    got
}

async fn publish_all(bus: &KafkaBus, topic: &str, key: impl Fn(usize) -> String, n: usize) {
    for i in 0..n {
        bus.publish(topic, &key(i), format!("m{i}").into_bytes())
            .await
            .expect("publish");
    }
}

/// Partition count of `topic`, asked of the broker by a client of our own.
async fn partitions_of(broker: &Broker, topic: &str) -> usize {
    let bootstrap = broker.bootstrap();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("a metadata client");
        let metadata = client
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0)
    })
    .await
    .expect("metadata task")
}

#[tokio::test]
async fn offsets_are_never_committed_past_an_unfinished_message() {
    let broker = Broker::start();
    let bus = bus_with_topic(&broker, "orders", 1).await;
    publish_all(&bus, "orders", |_| "k".into(), 4).await;

    let mut sub = bus.subscribe("orders", "g").await.unwrap();
    let m0 = next(&mut sub).await;
    let m1 = next(&mut sub).await;
    let m2 = next(&mut sub).await;
    let m3 = next(&mut sub).await;
    assert_eq!(
        [&m0, &m1, &m2, &m3].map(text),
        ["m0", "m1", "m2", "m3"],
        "one partition: in order"
    );
    m0.ack().await.unwrap();
    // m1 stays unfinished while the ones after it are done.
    m3.ack().await.unwrap();
    m2.ack().await.unwrap();
    drop(sub);

    let mut again = bus.subscribe("orders", "g").await.unwrap();
    let mut redelivered = Vec::new();
    for _ in 0..3 {
        let delivery = next(&mut again).await;
        redelivered.push(text(&delivery));
        delivery.ack().await.unwrap();
    }
    assert_eq!(
        redelivered,
        ["m1", "m2", "m3"],
        "from the unfinished m1 on, nothing before it"
    );
    drop(m1);
    drop(again);
    stop(bus, broker).await;
}

#[tokio::test]
async fn a_delivery_dropped_without_ack_comes_again_to_the_same_running_subscription() {
    let broker = Broker::start();
    let bus = bus_with_topic(&broker, "jobs", 1).await;
    publish_all(&bus, "jobs", |_| "k".into(), 3).await;

    let mut sub = bus.subscribe("jobs", "g").await.unwrap();
    let first = next(&mut sub).await;
    let second = next(&mut sub).await;
    let third = next(&mut sub).await;
    third.ack().await.unwrap();
    // `first` is still being worked on while `second` is given back.
    assert_eq!(text(&second), "m1");
    drop(second);

    let again = next(&mut sub).await;
    assert_eq!(
        text(&again),
        "m1",
        "the dropped message, to the same member"
    );
    again.ack().await.unwrap();
    first.ack().await.unwrap();
    drop(sub);
    stop(bus, broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_member_leaves_the_other_gets_what_it_had_not_acknowledged() {
    let broker = Broker::start();
    let bus = bus_with_topic(&broker, "shards", 2).await;
    let mut leaving = bus.subscribe("shards", "workers").await.unwrap();
    let mut staying = bus.subscribe("shards", "workers").await.unwrap();
    publish_all(&bus, "shards", |i| format!("key-{i}"), 20).await;

    let idle = Duration::from_secs(2);
    let (left_with, stayed_with) =
        tokio::join!(drain(&mut leaving, idle), drain(&mut staying, idle));
    assert_eq!(left_with.len() + stayed_with.len(), 20, "each message once");
    assert!(!left_with.is_empty(), "both members had a partition");
    let mut done = BTreeSet::new();
    for delivery in stayed_with {
        done.insert(text(&delivery));
        delivery.ack().await.unwrap();
    }
    // The leaving member finishes every other message and holds the rest.
    let mut unfinished = BTreeSet::new();
    let mut held = Vec::new();
    for (i, delivery) in left_with.into_iter().enumerate() {
        if i % 2 == 0 {
            done.insert(text(&delivery));
            delivery.ack().await.unwrap();
        } else {
            unfinished.insert(text(&delivery));
            held.push(delivery);
        }
    }
    assert!(!unfinished.is_empty());
    drop(leaving);

    let deadline = Instant::now() + WAIT;
    let mut taken_over = BTreeSet::new();
    while !unfinished.is_subset(&taken_over) {
        assert!(
            Instant::now() < deadline,
            "still missing {:?}",
            unfinished.difference(&taken_over).collect::<Vec<_>>()
        );
        let delivery = next(&mut staying).await;
        taken_over.insert(text(&delivery));
        delivery.ack().await.unwrap();
    }
    drop(held);
    drop(staying);
    stop(bus, broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_busy_with_its_deliveries_still_lets_others_join() {
    let broker = Broker::start();
    let bus = bus_with_topic(&broker, "busy", 2).await;
    let mut busy = bus.subscribe("busy", "workers").await.unwrap();
    publish_all(&bus, "busy", |i| format!("key-{i}"), 10).await;
    // Takes one message and then asks for no more, as a worker whose cores
    // are all taken does.
    let held = next(&mut busy).await;

    let started = Instant::now();
    let mut newcomer = bus.subscribe("busy", "workers").await.unwrap();
    let got = drain(&mut newcomer, Duration::from_secs(3)).await;
    assert!(
        !got.is_empty(),
        "the newcomer got a partition and its messages ({:?} after joining)",
        started.elapsed()
    );
    for delivery in got {
        delivery.ack().await.unwrap();
    }
    drop(held);
    drop((busy, newcomer));
    stop(bus, broker).await;
}

#[tokio::test]
async fn topics_are_created_with_the_configured_partitions_and_existing_ones_kept() {
    let broker = Broker::start();
    let mut first = settings(&broker);
    first.partitions = 3;
    first.topics = vec!["tasks".into(), "results".into()];
    let bus = KafkaBus::connect(first).await.expect("connect");
    assert_eq!(partitions_of(&broker, "tasks").await, 3);
    assert_eq!(partitions_of(&broker, "results").await, 3);

    let mut second = settings(&broker);
    second.partitions = 5;
    second.topics = vec!["tasks".into(), "shards".into()];
    let again = KafkaBus::connect(second).await.expect("connect again");
    assert_eq!(partitions_of(&broker, "tasks").await, 3, "left as it was");
    assert_eq!(partitions_of(&broker, "shards").await, 5);
    again.shutdown(Duration::from_secs(5)).await;
    stop(bus, broker).await;
}

#[tokio::test]
async fn connecting_where_nothing_listens_fails_within_the_timeout_naming_the_address() {
    let port = dts_testkit::free_port();
    let mut settings = KafkaSettings::new(format!("127.0.0.1:{port}"));
    settings.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = KafkaBus::connect(settings)
        .await
        .err()
        .expect("no broker, no bus");
    // The promise is the connect timeout (2 s); 10 s leaves room for a
    // loaded machine and still fails a connect that keeps retrying.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let reaching = format!("cannot reach the kafka brokers at 127.0.0.1:{port} within 2s");
    assert!(
        matches!(&err, BusError::Unavailable { op, .. } if *op == reaching),
        "{err:?}"
    );
}

#[tokio::test]
async fn bad_settings_are_refused_before_any_broker_is_asked_and_not_worth_retrying() {
    // Nothing listens here: a refusal that needed the broker would be Unavailable.
    let bootstrap = format!("127.0.0.1:{}", dts_testkit::free_port());

    let mut no_partitions = KafkaSettings::new(bootstrap.clone());
    no_partitions.partitions = 0;
    let err = KafkaBus::connect(no_partitions)
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, BusError::ZeroPartitions), "{err:?}");
    assert!(!err.is_retryable());

    let mut unknown_setting = KafkaSettings::new(bootstrap);
    unknown_setting
        .client
        .insert("no.such.setting".into(), "1".into());
    let err = KafkaBus::connect(unknown_setting)
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, BusError::InvalidSettings { .. }), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn publishing_while_the_broker_is_down_fails_retryably_within_the_bound_and_works_once_it_is_back()
 {
    let mut broker = Broker::start();
    let mut settings = settings(&broker);
    settings
        .client
        .insert("message.timeout.ms".into(), "1500".into());
    // The restarted test broker has lost everything, producer ids included,
    // and tansu then refuses the idempotent producer's id for good (a real
    // cluster keeps producer state with its logs).
    settings
        .client
        .insert("enable.idempotence".into(), "false".into());
    settings.topics = vec!["tasks".into()];
    let bus = KafkaBus::connect(settings).await.expect("connect");
    bus.publish("tasks", "k", b"before".to_vec()).await.unwrap();

    broker.kill();
    let started = Instant::now();
    let err = bus
        .publish("tasks", "k", b"during".to_vec())
        .await
        .expect_err("the broker is down");
    let took = started.elapsed();
    assert!(err.is_retryable(), "{err}");
    // The bus's promise here is about 3.5 s: 1 s for the local queue, the
    // 1.5 s message timeout, 1 s grace. 10 s leaves room for a loaded
    // machine; a publish that ignored the message timeout would wait
    // librdkafka's default of 300 s and still fail this.
    assert!(took < Duration::from_secs(10), "took {took:?}");

    broker.restart();
    let deadline = Instant::now() + WAIT;
    while let Err(err) = bus.publish("tasks", "k", b"after".to_vec()).await {
        assert!(err.is_retryable(), "{err}");
        assert!(Instant::now() < deadline, "still failing: {err}");
    }
    stop(bus, broker).await;
}

#[tokio::test]
async fn a_payload_over_the_limit_is_too_large_and_one_at_the_limit_goes_through() {
    let broker = Broker::start();
    let mut settings = settings(&broker);
    // Above Kafka's 1 MB default, so the client's own limit must be raised.
    settings.max_message_bytes = 3_000_000;
    settings.topics = vec!["big".into()];
    let bus = KafkaBus::connect(settings).await.expect("connect");

    let err = bus
        .publish("big", "k", vec![b'x'; 3_000_001])
        .await
        .expect_err("over the limit");
    assert!(
        matches!(
            err,
            BusError::TooLarge {
                size: 3_000_001,
                limit: 3_000_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retryable());

    bus.publish("big", "k", vec![b'y'; 3_000_000])
        .await
        .expect("a payload at the limit");
    let mut sub = bus.subscribe("big", "g").await.unwrap();
    let delivery = next(&mut sub).await;
    assert_eq!(delivery.payload.len(), 3_000_000);
    delivery.ack().await.unwrap();
    drop(sub);
    stop(bus, broker).await;
}

#[tokio::test]
async fn closing_the_bus_ends_its_subscriptions() {
    let broker = Broker::start();
    let bus = bus_with_topic(&broker, "tasks", 1).await;
    let mut sub = bus.subscribe("tasks", "g").await.unwrap();
    let waiting = tokio::spawn(async move { sub.next().await.map(|_| ()) });
    bus.close();
    let result = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(matches!(result, Err(BusError::Closed)), "{result:?}");
    assert!(matches!(
        bus.publish("tasks", "k", b"x".to_vec()).await,
        Err(BusError::Closed)
    ));
    stop(bus, broker).await;
}

#[tokio::test]
async fn closing_the_bus_ends_its_listeners_and_they_leave_no_member_open() {
    let broker = Broker::start();
    let bus = bus_with_topic(&broker, "wake", 2).await;
    let mut listener = bus.listen("wake").await.unwrap();
    let waiting = tokio::spawn(async move { listener.next().await.map(|_| ()) });
    bus.close();
    let result = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(matches!(result, Err(BusError::Closed)), "{result:?}");
    // `stop` asserts that every consumer, the listener's too, has closed.
    stop(bus, broker).await;
}

#[tokio::test]
async fn a_listener_reads_a_topic_it_is_the_first_to_use() {
    let broker = Broker::start();
    let bus = bus_with_topic(&broker, "tasks", 3).await;
    let mut listener = bus.listen("never-created-before").await.unwrap();
    assert_eq!(partitions_of(&broker, "never-created-before").await, 3);
    bus.publish("never-created-before", "k", b"wake".to_vec())
        .await
        .unwrap();
    let delivery = next(&mut listener).await;
    assert_eq!(text(&delivery), "wake");
    delivery
        .ack()
        .await
        .expect("acking a listened delivery does nothing");
    drop(listener);
    stop(bus, broker).await;
}
