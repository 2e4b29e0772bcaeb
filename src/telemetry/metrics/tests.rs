//! Unit tests of the parent module.
use super::*;

#[test]
fn counts_and_renders() {
    let m = Metrics::new();
    m.request(
        Transport::Grpc,
        Method::BuildRtcToken,
        tonic::Code::Ok,
        Duration::from_millis(2),
    );
    m.request(
        Transport::Http,
        Method::GetToken,
        tonic::Code::InvalidArgument,
        Duration::from_millis(1),
    );
    m.token_issued(TokenKind::Rtc, "app");
    m.token_issued(TokenKind::Rtc, "app");
    m.token_issued_by(TokenKind::Rtm, "app", "svc-a");
    let text = m.render(true);
    assert!(text.contains(
        "token_authority_requests_total{transport=\"grpc\",method=\"BuildRtcToken\",code=\"ok\"} 1"
    ));
    assert!(text.contains(
        "token_authority_requests_total{transport=\"http\",method=\"GetToken\",code=\"invalid_argument\"} 1"
    ));
    assert!(text.contains(
        "token_authority_tokens_issued_total{kind=\"rtc\",app_id=\"app\",caller=\"open\"} 2"
    ));
    assert!(text.contains(
        "token_authority_request_duration_seconds_count{transport=\"grpc\",method=\"BuildRtcToken\"} 1"
    ));
    assert!(text.contains("token_authority_ready 1"));
    assert!(text.contains("token_authority_config_reloads_total{result=\"ok\"} 0"));
    assert!(text.contains("token_authority_config_last_reload_successful 1"));
    assert!(text.contains("\ntoken_authority_log_lines_dropped_total "));
    assert!(text.contains("\ntoken_authority_log_refusals_suppressed_total "));
}

#[test]
fn reloads_and_apps() {
    let m = Metrics::new();
    m.set_apps(vec![("a".into(), 2), ("b".into(), 1)]);
    m.reload(true);
    m.reload(false);
    assert_eq!(m.reloads(), (1, 1));
    let text = m.render(true);
    assert!(text.contains("token_authority_app_certificates{app_id=\"a\"} 2"));
    assert!(text.contains("token_authority_app_certificates{app_id=\"b\"} 1"));
    assert!(text.contains("token_authority_config_reloads_total{result=\"error\"} 1"));
    assert!(text.contains("token_authority_config_last_reload_successful 0"));
    assert!(text.contains("token_authority_config_last_reload_success_timestamp_seconds 1"));
}

#[tokio::test]
async fn caller_scope_labels_tokens_and_disabled_records_nothing() {
    let m = Metrics::new();
    with_caller(Arc::from("svc-b"), async {
        m.token_issued(TokenKind::Rtc, "app");
    })
    .await;
    m.token_issued(TokenKind::Rtc, "app");
    let text = m.render(true);
    assert!(text.contains(
        "token_authority_tokens_issued_total{kind=\"rtc\",app_id=\"app\",caller=\"svc-b\"} 1"
    ));
    assert!(text.contains(
        "token_authority_tokens_issued_total{kind=\"rtc\",app_id=\"app\",caller=\"open\"} 1"
    ));
    let off = Metrics::disabled();
    off.token_issued(TokenKind::Rtc, "app");
    off.request(
        Transport::Grpc,
        Method::BuildRtcToken,
        tonic::Code::Ok,
        Duration::from_millis(1),
    );
    assert!(!off.is_enabled());
    assert!(!off.render(true).contains("tokens_issued_total{"));
}

#[test]
fn method_names_round_trip() {
    for m in Method::ALL {
        if m != Method::GetToken {
            assert_eq!(Method::from_rpc_name(m.as_str()), Some(m));
        }
    }
    assert_eq!(Method::from_rpc_name("GetToken"), None);
}

#[test]
fn latency_buckets_resolve_microseconds_per_method() {
    let m = Metrics::new();
    let rec = |method, micros| {
        m.request(
            Transport::Json,
            method,
            tonic::Code::Ok,
            Duration::from_micros(micros),
        );
    };
    rec(Method::BuildRtcToken, 30); // <= 50 us
    rec(Method::BuildRtcToken, 50); // on the bound: le="0.00005"
    rec(Method::BuildRtcToken, 80); // <= 100 us
    rec(Method::BuildRtcToken, 3_000_000); // above every bound: +Inf only
    rec(Method::InspectToken, 700); // <= 1 ms
    let text = m.render(true);
    let line = |labels: &str, v: u64| {
        format!("token_authority_request_duration_seconds_bucket{{{labels}}} {v}\n")
    };
    let rtc = "transport=\"json\",method=\"BuildRtcToken\"";
    for (le, v) in [("0.00005", 2), ("0.0001", 3), ("2.5", 3), ("+Inf", 4)] {
        let want = line(&format!("{rtc},le=\"{le}\""), v);
        assert!(text.contains(&want), "missing {want} in\n{text}");
    }
    let inspect = "transport=\"json\",method=\"InspectToken\"";
    for (le, v) in [("0.0005", 0), ("0.001", 1)] {
        let want = line(&format!("{inspect},le=\"{le}\""), v);
        assert!(text.contains(&want), "missing {want} in\n{text}");
    }
    assert!(text.contains(&format!(
        "token_authority_request_duration_seconds_sum{{{rtc}}} 3.00016\n"
    )));
    // Pairs that never served are not rendered (bounded output).
    assert!(!text.contains("method=\"BuildFpaToken\",le="));
    assert_eq!(BUCKET_MICROS.len(), BUCKET_LE.len());
    for (micros, le) in BUCKET_MICROS.iter().zip(BUCKET_LE) {
        let secs: f64 = le.parse().unwrap();
        assert!(
            (secs * 1e6 - *micros as f64).abs() < 1e-6,
            "{le} != {micros} us"
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
fn process_series_are_exported() {
    let text = Metrics::new().render(true);
    let value = |name: &str| -> f64 {
        let prefix = format!("\n{name} ");
        let start = text
            .find(&prefix)
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        let rest = &text[start + prefix.len()..];
        rest[..rest.find('\n').unwrap()].parse().unwrap()
    };
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_max_fds") >= value("process_open_fds"));
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = value("process_start_time_seconds");
    assert!(
        start > now - 86_400.0 * 30.0 && start <= now + 1.0,
        "start {start}, now {now}"
    );
    assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
}
