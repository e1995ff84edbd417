//! The gateway's routes; each module exposes `router()`.

pub mod auth;
pub mod health;
pub mod openapi;
pub mod proxy;
