//! The gateway's middleware. Real, reusable middleware is a tower `Layer` + `Service`
//! in its own folder (`rate_limit`); request bookkeeping that only makes sense here is
//! a plain `axum::middleware::from_fn` function; [`cors`] builds tower-http's layer
//! from the settings. Load shedding is tower's own (`crate::routes::router`).

pub mod authenticate;
pub mod client_ip;
pub mod cors;
pub mod rate_limit;
