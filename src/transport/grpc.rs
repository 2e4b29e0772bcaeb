//! The gRPC `TokenService`: tonic's trait over [`crate::api::TokenApi`], and
//! the one rendering of [`ApiError`] as a gRPC status.

use crate::api::{ApiError, RETRY_AFTER, TokenApi};
use crate::pb;
use crate::policy::{Authn, Denial};
use crate::telemetry::metrics::{Method, Transport};
use crate::transport::COMPRESS_MIN_BYTES;
pub use pb::token_service_server::{TokenService, TokenServiceServer};
use tonic::{Request, Response, Status};

/// An [`ApiError`] as a gRPC status: its code and message, its structured
/// details ([`ApiError::details`]: `ErrorInfo`, `BadRequest`, `RetryInfo`)
/// as a `google.rpc.Status` in `grpc-status-details-bin` (the form
/// `tonic_types::StatusExt` and every gRPC runtime's rich-error API read),
/// and the wait of a refused request as `retry-after` metadata (whole
/// seconds).
impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        use prost::Message as _;
        let details = tonic_types::pb::Status {
            code: e.code as i32,
            message: e.message.clone(),
            details: e
                .details()
                .into_iter()
                .map(|d| prost_types::Any {
                    type_url: format!("type.googleapis.com/{}", d.type_name),
                    value: d.value,
                })
                .collect(),
        };
        let mut s =
            Status::with_details(e.code, e.message.as_str(), details.encode_to_vec().into());
        if let Some(v) = e
            .retry_after_secs()
            .and_then(|v| v.to_string().parse().ok())
        {
            s.metadata_mut().insert(RETRY_AFTER, v);
        }
        s
    }
}

/// Runs one gRPC call through the API (audited, counted and logged there).
///
/// A response smaller than [`COMPRESS_MIN_BYTES`] (a token: its payload is
/// already deflated) is sent uncompressed even to a client that accepts
/// gzip: compressing it saves nothing and cost more than the whole call
/// (a gzip stream per response: ~200k instructions against ~140k).
async fn call<T: prost::Message>(
    api: &TokenApi,
    method: Method,
    f: impl FnOnce(&TokenApi) -> Result<T, ApiError>,
) -> Result<Response<T>, Status> {
    api.call(Transport::Grpc, method, f)
        .await
        .map(|message| {
            let small = message.encoded_len() < COMPRESS_MIN_BYTES;
            let mut response = Response::new(message);
            if small {
                response.disable_compression();
            }
            response
        })
        .map_err(Status::from)
}

/// The caller of a gRPC request, as the server's middleware identified it.
/// Absent (a request that did not pass the middleware) fails closed.
fn authn<T>(request: &Request<T>) -> Authn {
    request
        .extensions()
        .get::<Authn>()
        .cloned()
        .unwrap_or(Authn::new(Err(Denial::Unauthenticated(
            "the request was not authenticated",
        ))))
}

/// What a `WatchToken` request presented to be identified (attached by the
/// server's middleware); absent, nothing (a renewal then fails closed).
fn credentials<T>(request: &Request<T>) -> crate::policy::Credentials {
    request
        .extensions()
        .get::<crate::policy::Credentials>()
        .cloned()
        .unwrap_or(crate::policy::Credentials {
            key: None,
            jwt: None,
            tls_names: std::sync::Arc::default(),
            ip: std::net::IpAddr::from([0, 0, 0, 0]),
        })
}

/// The stream of a `WatchToken` call: what the watch's channel yields.
pub type WatchStream = std::pin::Pin<
    Box<
        dyn tonic::codegen::tokio_stream::Stream<Item = Result<pb::WatchTokenResponse, Status>>
            + Send,
    >,
>;

#[tonic::async_trait]
impl TokenService for TokenApi {
    type WatchTokenStream = WatchStream;

    async fn watch_token(
        &self,
        request: Request<pb::WatchTokenRequest>,
    ) -> Result<Response<Self::WatchTokenStream>, Status> {
        use tonic::codegen::tokio_stream::StreamExt as _;
        let who = authn(&request);
        let creds = credentials(&request);
        let rx = self
            .watch(Transport::Grpc, who, creds, request.into_inner())
            .await
            .map_err(Status::from)?;
        let stream = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|item| (*item).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn build_rtc_token(
        &self,
        request: Request<pb::BuildRtcTokenRequest>,
    ) -> Result<Response<pb::BuildRtcTokenResponse>, Status> {
        let who = authn(&request);
        call(self, Method::BuildRtcToken, |a| {
            a.build_rtc_token(&who, request.into_inner())
        })
        .await
    }

    async fn build_rtc_token_with_privileges(
        &self,
        request: Request<pb::BuildRtcTokenWithPrivilegesRequest>,
    ) -> Result<Response<pb::BuildRtcTokenWithPrivilegesResponse>, Status> {
        let who = authn(&request);
        call(self, Method::BuildRtcTokenWithPrivileges, |a| {
            a.build_rtc_token_with_privileges(&who, request.into_inner())
        })
        .await
    }

    async fn build_rtc_rtm_token(
        &self,
        request: Request<pb::BuildRtcRtmTokenRequest>,
    ) -> Result<Response<pb::BuildRtcRtmTokenResponse>, Status> {
        let who = authn(&request);
        call(self, Method::BuildRtcRtmToken, |a| {
            a.build_rtc_rtm_token(&who, request.into_inner())
        })
        .await
    }

    async fn build_rtm_token(
        &self,
        request: Request<pb::BuildRtmTokenRequest>,
    ) -> Result<Response<pb::BuildRtmTokenResponse>, Status> {
        let who = authn(&request);
        call(self, Method::BuildRtmToken, |a| {
            a.build_rtm_token(&who, request.into_inner())
        })
        .await
    }

    async fn build_chat_user_token(
        &self,
        request: Request<pb::BuildChatUserTokenRequest>,
    ) -> Result<Response<pb::BuildChatUserTokenResponse>, Status> {
        let who = authn(&request);
        call(self, Method::BuildChatUserToken, |a| {
            a.build_chat_user_token(&who, request.into_inner())
        })
        .await
    }

    async fn build_chat_app_token(
        &self,
        request: Request<pb::BuildChatAppTokenRequest>,
    ) -> Result<Response<pb::BuildChatAppTokenResponse>, Status> {
        let who = authn(&request);
        call(self, Method::BuildChatAppToken, |a| {
            a.build_chat_app_token(&who, request.into_inner())
        })
        .await
    }

    async fn build_fpa_token(
        &self,
        request: Request<pb::BuildFpaTokenRequest>,
    ) -> Result<Response<pb::BuildFpaTokenResponse>, Status> {
        let who = authn(&request);
        call(self, Method::BuildFpaToken, |a| {
            a.build_fpa_token(&who, request.into_inner())
        })
        .await
    }

    async fn build_apaas_token(
        &self,
        request: Request<pb::BuildApaasTokenRequest>,
    ) -> Result<Response<pb::BuildApaasTokenResponse>, Status> {
        let who = authn(&request);
        call(self, Method::BuildApaasToken, |a| {
            a.build_apaas_token(&who, request.into_inner())
        })
        .await
    }

    async fn build_token(
        &self,
        request: Request<pb::BuildTokenRequest>,
    ) -> Result<Response<pb::BuildTokenResponse>, Status> {
        let who = authn(&request);
        call(self, Method::BuildToken, |a| {
            a.build_token(&who, request.into_inner())
        })
        .await
    }

    async fn inspect_token(
        &self,
        request: Request<pb::InspectTokenRequest>,
    ) -> Result<Response<pb::InspectTokenResponse>, Status> {
        let who = authn(&request);
        call(self, Method::InspectToken, |a| {
            a.inspect_token(&who, request.into_inner())
        })
        .await
    }

    async fn build_agent_session(
        &self,
        request: Request<pb::BuildAgentSessionRequest>,
    ) -> Result<Response<pb::BuildAgentSessionResponse>, Status> {
        let who = authn(&request);
        call(self, Method::BuildAgentSession, |a| {
            a.build_agent_session(&who, request.into_inner())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use agora_token::{AppCertificate, AppId};

    use super::*;
    use crate::domain::{AppCredentials, Issuer};
    use crate::policy::Identity;
    use crate::state::Shared;
    use std::sync::Arc;
    use tonic::Code;

    fn api() -> TokenApi {
        let issuer = Issuer::new(vec![AppCredentials {
            app_id: AppId::new("970CA35de60c44645bbae8a215061b33").unwrap(),
            certificate: AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b").unwrap(),
            secondary: None,
        }]);
        TokenApi::new(Arc::new(Shared::new(crate::state::Snapshot::open(issuer))))
    }

    #[test]
    fn api_errors_render_as_status_with_retry_after() {
        let s = Status::from(ApiError::invalid("uid", "bad"));
        assert_eq!((s.code(), s.message()), (Code::InvalidArgument, "uid: bad"));
        assert!(s.metadata().get(RETRY_AFTER).is_none());
        let s = Status::from(ApiError::from(Denial::RateLimited {
            retry_after: std::time::Duration::from_millis(1500),
        }));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.metadata().get(RETRY_AFTER).unwrap(), "2");
        let s = Status::from(ApiError::from(Denial::Unauthenticated("x")));
        assert_eq!(s.code(), Code::Unauthenticated);
    }

    #[test]
    fn statuses_carry_rich_details_that_tonic_types_reads() {
        use tonic_types::StatusExt as _;
        let s = Status::from(ApiError::invalid("uid", "must be a number"));
        let d = s.get_error_details();
        let bad = d.bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "uid");
        assert_eq!(bad.field_violations[0].description, "must be a number");
        let info = d.error_info().unwrap();
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, "token-authority");
        let s = Status::from(ApiError::from(Denial::RateLimited {
            retry_after: std::time::Duration::from_millis(1500),
        }));
        let d = s.get_error_details();
        assert_eq!(d.error_info().unwrap().reason, "RATE_LIMITED");
        assert_eq!(
            d.retry_info().unwrap().retry_delay,
            Some(std::time::Duration::from_millis(1500))
        );
        let s = Status::from(ApiError::from(Denial::Policy {
            rule: "channels",
            detail: "no".into(),
        }));
        let info = s.get_error_details().error_info().unwrap().clone();
        assert_eq!(info.reason, "POLICY_CHANNELS");
        assert_eq!(info.metadata.get("rule").unwrap(), "channels");
    }

    fn open_request<T>(msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.extensions_mut().insert(Authn::new(Ok(Identity::Open)));
        r
    }

    #[tokio::test]
    async fn requests_that_skipped_authentication_fail_closed() {
        let e = TokenService::build_rtc_token(
            &api(),
            Request::new(pb::BuildRtcTokenRequest {
                channel_name: "c".into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn service_methods_can_be_called_directly() {
        let api = api();
        let r = TokenService::build_rtc_token(
            &api,
            open_request(pb::BuildRtcTokenRequest {
                channel_name: "c".into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_inner();
        assert!(r.token.starts_with("007"));
        let e = TokenService::build_rtc_token(
            &api,
            open_request(pb::BuildRtcTokenRequest {
                role: 42,
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(
            api.shared().metrics.requests_total(
                Transport::Grpc,
                Method::BuildRtcToken,
                Code::InvalidArgument
            ),
            1
        );
    }
}
