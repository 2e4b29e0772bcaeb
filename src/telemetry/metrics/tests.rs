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
    assert!(text.contains("token_authority_request_duration_seconds_count{transport=\"grpc\"} 1"));
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
