//! The gateway's middleware. Real, reusable middleware is a tower `Layer` + `Service`
//! in its own folder (`load_shed`, `rate_limit`); request bookkeeping that only makes
//! sense here is a plain `axum::middleware::from_fn` function.

pub mod authenticate;
pub mod client_ip;
pub mod load_shed;
pub mod rate_limit;
