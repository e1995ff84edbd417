//! Telemetry configuration, read from the standard OpenTelemetry environment variables.
//!
//! [`Config::from_env`] is what [`crate::init`] uses; [`Config::from_lookup`] reads the same
//! variables through a function so that tests (which may not mutate the process
//! environment: `unsafe_code` is forbidden) can build any configuration.

use std::time::Duration;

/// Default size of the span queue between request threads and the exporter thread.
pub const DEFAULT_SPAN_QUEUE_SIZE: usize = 2_048;
/// Default number of log lines buffered in front of the (blocking) log writer.
pub const DEFAULT_LOG_BUFFER_LINES: usize = 16_384;
/// The filter used when `RUST_LOG` is not set.
pub const DEFAULT_LOG_FILTER: &str =
    "info,sqlx=warn,tower_http=info,h2=warn,hyper=warn,tonic=warn,reqwest=warn";

/// The log format, from `LOG_FORMAT` (`json`, the default for containers, or `pretty`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, with `trace_id`/`span_id` at the top level.
    Json,
    /// Human-readable multi-colour output for a terminal.
    Pretty,
}

impl LogFormat {
    fn parse(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            Some("pretty") | Some("text") => Self::Pretty,
            _ => Self::Json,
        }
    }
}

/// The OTLP transport, from `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (tonic); the endpoint is usually `http://host:4317`.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (the default); the endpoint is usually `http://host:4318`.
    HttpProtobuf,
}

/// Where and how spans are exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The full traces endpoint: for HTTP it ends in `/v1/traces` (DEPENDENCIES.md trap 4).
    pub endpoint: String,
    /// The transport.
    pub protocol: OtlpProtocol,
}

/// The head sampler, from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerConfig {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio` with its ratio.
    TraceIdRatio(f64),
    /// `parentbased_always_on` (the default).
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio` with its ratio: roots are sampled at the ratio, children
    /// follow their parent's decision.
    ParentBasedTraceIdRatio(f64),
}

/// Everything [`crate::init_with`] needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// `service.name` of the resource (`OTEL_SERVICE_NAME` overrides the code's name).
    pub service_name: String,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `RUST_LOG`, or [`DEFAULT_LOG_FILTER`].
    pub log_filter: String,
    /// `None`: no exporter (no endpoint configured, or `OTEL_SDK_DISABLED=true`).
    pub otlp: Option<OtlpConfig>,
    /// The head sampler.
    pub sampler: SamplerConfig,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES=k=v,k2=v2`).
    pub resource_attributes: Vec<(String, String)>,
    /// Spans waiting for export at most (`OTEL_BSP_MAX_QUEUE_SIZE`); beyond it new spans
    /// are dropped and counted in `otel_spans_dropped_total`.
    pub span_queue_size: usize,
    /// How often the batch processor exports (`OTEL_BSP_SCHEDULE_DELAY`, milliseconds).
    pub export_interval: Duration,
    /// Log lines buffered in front of the writer; beyond it lines are dropped (and counted).
    pub log_buffer_lines: usize,
    /// Problems found while reading the environment, logged once logging works.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env(service_name: &str) -> Self {
        Self::from_lookup(service_name, |key| std::env::var(key).ok())
    }

    /// Reads the variables through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(service_name: &str, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut warnings = Vec::new();

        let service_name = get("OTEL_SERVICE_NAME").unwrap_or_else(|| service_name.to_owned());
        let log_format = LogFormat::parse(get("LOG_FORMAT").as_deref());
        let log_filter = get("RUST_LOG").unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned());

        let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let protocol = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                warnings.push(format!(
                    "unsupported OTLP protocol {other:?}; using http/protobuf"
                ));
                OtlpProtocol::HttpProtobuf
            }
        };
        // The signal-specific endpoint is used as is; the generic one gets the signal's
        // path appended for HTTP (the OTLP exporter spec; DEPENDENCIES.md trap 4).
        let endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
            get("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| match protocol {
                OtlpProtocol::Grpc => base,
                OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
            })
        });
        let otlp = match endpoint {
            Some(endpoint) if !disabled => Some(OtlpConfig { endpoint, protocol }),
            _ => None,
        };

        let sampler = parse_sampler(
            get("OTEL_TRACES_SAMPLER").as_deref(),
            get("OTEL_TRACES_SAMPLER_ARG").as_deref(),
            &mut warnings,
        );
        let resource_attributes = get("OTEL_RESOURCE_ATTRIBUTES")
            .map(|raw| parse_resource_attributes(&raw))
            .unwrap_or_default();
        let span_queue_size = get("OTEL_BSP_MAX_QUEUE_SIZE")
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_SPAN_QUEUE_SIZE);
        let export_interval = get("OTEL_BSP_SCHEDULE_DELAY")
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(5), Duration::from_millis);

        Self {
            service_name,
            log_format,
            log_filter,
            otlp,
            sampler,
            resource_attributes,
            span_queue_size,
            export_interval,
            log_buffer_lines: DEFAULT_LOG_BUFFER_LINES,
            warnings,
        }
    }
}

fn parse_sampler(
    name: Option<&str>,
    arg: Option<&str>,
    warnings: &mut Vec<String>,
) -> SamplerConfig {
    match name {
        None | Some("parentbased_always_on") => SamplerConfig::ParentBasedAlwaysOn,
        Some("always_on") => SamplerConfig::AlwaysOn,
        Some("always_off") => SamplerConfig::AlwaysOff,
        Some("parentbased_always_off") => SamplerConfig::ParentBasedAlwaysOff,
        Some("traceidratio") => SamplerConfig::TraceIdRatio(parse_ratio(arg, warnings)),
        Some("parentbased_traceidratio") => {
            SamplerConfig::ParentBasedTraceIdRatio(parse_ratio(arg, warnings))
        }
        Some(other) => {
            warnings.push(format!(
                "unsupported OTEL_TRACES_SAMPLER {other:?}; using parentbased_always_on"
            ));
            SamplerConfig::ParentBasedAlwaysOn
        }
    }
}

fn parse_ratio(arg: Option<&str>, warnings: &mut Vec<String>) -> f64 {
    match arg.map(str::parse::<f64>) {
        None => 1.0,
        Some(Ok(r)) if (0.0..=1.0).contains(&r) => r,
        Some(_) => {
            warnings.push(format!(
                "invalid OTEL_TRACES_SAMPLER_ARG {arg:?}; using 1.0"
            ));
            1.0
        }
    }
}

/// `k=v,k2=v2` (the W3C Baggage format without properties; values are not percent-decoded).
fn parse_resource_attributes(raw: &str) -> Vec<(String, String)> {
    raw.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let (k, v) = (k.trim(), v.trim());
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Config {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup("orders", |k| map.get(k).cloned())
    }

    #[test]
    fn without_an_endpoint_there_is_no_exporter_and_logs_are_json() {
        let c = config(&[]);
        assert_eq!(c.otlp, None);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.service_name, "orders");
        assert_eq!(c.sampler, SamplerConfig::ParentBasedAlwaysOn);
    }

    #[test]
    fn the_generic_http_endpoint_gets_the_traces_path_appended() {
        let c = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]);
        let otlp = c.otlp.expect("an exporter");
        assert_eq!(otlp.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(otlp.protocol, OtlpProtocol::HttpProtobuf);
    }

    #[test]
    fn the_traces_endpoint_is_used_as_is_and_grpc_keeps_its_endpoint() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://a:1/custom"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://b:2"),
        ]);
        assert_eq!(c.otlp.expect("exporter").endpoint, "http://a:1/custom");
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        let otlp = c.otlp.expect("exporter");
        assert_eq!(
            (otlp.endpoint.as_str(), otlp.protocol),
            ("http://jaeger:4317", OtlpProtocol::Grpc)
        );
    }

    #[test]
    fn sdk_disabled_turns_the_exporter_off() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert_eq!(c.otlp, None);
    }

    #[test]
    fn sampler_service_name_and_resource_attributes_come_from_the_environment() {
        let c = config(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_SERVICE_NAME", "orders-canary"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod, team=shop,broken",
            ),
            ("LOG_FORMAT", "pretty"),
        ]);
        assert_eq!(c.sampler, SamplerConfig::ParentBasedTraceIdRatio(0.25));
        assert_eq!(c.service_name, "orders-canary");
        assert_eq!(
            c.resource_attributes,
            vec![
                ("deployment.environment".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "shop".to_owned())
            ]
        );
        assert_eq!(c.log_format, LogFormat::Pretty);
    }

    #[test]
    fn an_invalid_sampler_falls_back_to_the_default_with_a_warning() {
        let c = config(&[
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "7"),
        ]);
        assert_eq!(c.sampler, SamplerConfig::ParentBasedAlwaysOn);
        assert_eq!(c.warnings.len(), 1);
        let c = config(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "7"),
        ]);
        assert_eq!(c.sampler, SamplerConfig::TraceIdRatio(1.0));
        assert_eq!(c.warnings.len(), 1);
    }
}
