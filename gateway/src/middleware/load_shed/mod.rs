//! Load shedding: a cap on requests in flight; beyond it, 503 + `Retry-After` at once.
//!
//! The alternative, a queue, is pitfall 5: waiters pile up without bound, each holding
//! memory and a client connection, and latency grows for everyone. A request here
//! either gets a permit immediately (`try_acquire`, never `acquire`) or is refused.
//! The permit lives in the response future, so it is released however the request
//! ends, including when the client disconnects and the future is dropped.

mod layer;

pub use layer::{LoadShed, LoadShedLayer};
