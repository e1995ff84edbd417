//! Event streams on Redis: the outbox relay that publishes a service's events
//! ([`outbox`]), and the consumer-group reader that processes another service's
//! ([`consumer`]). Together they are the two halves of the saga between orders and
//! payments (docs/architecture.md, "Event streams").

pub mod consumer;
pub mod outbox;

pub use consumer::{Consumer, ConsumerSettings, Delivery, Failure, Handler};
pub use outbox::{OutboxConfig, Relay, StreamEvent, Table};

/// Where a stream's dead letters go: `<stream>:dead`.
pub fn dead_letter_stream(stream: &str) -> String {
    format!("{stream}:dead")
}
