//! The shared GCRA state in Redis: one key per (policy, client) holding the
//! theoretical arrival time (TAT) in microseconds of Redis' own clock, updated by one
//! Lua script so that check-and-update is atomic across every replica.

use std::time::Duration;

use redis::Script;

/// `KEYS[1]` = the client's key; `ARGV` = emission interval (µs), burst, tokens wanted.
/// Grants `min(wanted, available)` tokens. Returns
/// `{granted, remaining, retry_after_us, reset_us}`.
const GCRA_LUA: &str = r"
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local tolerance = emission * burst
local available = math.floor((tolerance - (tat - now)) / emission)
if available < 1 then
  return {0, 0, (tat + emission - tolerance) - now, tat - now}
end
local granted = math.min(wanted, available)
local new_tat = tat + granted * emission
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {granted, available - granted, 0, new_tat - now}
";

/// The answer of one script run.
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    pub granted: u32,
    pub remaining: u32,
    pub retry_after: Duration,
    pub reset: Duration,
}

/// The loaded script (sent as `EVALSHA`, falling back to `EVAL` once per Redis).
#[derive(Clone, Debug)]
pub struct GcraScript(Script);

impl Default for GcraScript {
    fn default() -> Self {
        Self(Script::new(GCRA_LUA))
    }
}

impl GcraScript {
    pub async fn take(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        key: &str,
        emission: Duration,
        burst: u32,
        wanted: u32,
    ) -> redis::RedisResult<Grant> {
        let emission_us = u64::try_from(emission.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let (granted, remaining, retry_us, reset_us): (i64, i64, i64, i64) = self
            .0
            .key(key)
            .arg(emission_us)
            .arg(burst)
            .arg(wanted)
            .invoke_async(conn)
            .await?;
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(Grant {
            granted: u32::try_from(granted).unwrap_or(0),
            remaining: u32::try_from(remaining).unwrap_or(0),
            retry_after: micros(retry_us),
            reset: micros(reset_us),
        })
    }
}
