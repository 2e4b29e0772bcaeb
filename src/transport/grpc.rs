//! The gRPC `TokenService`: tonic's trait over [`crate::api::TokenApi`], and
//! the one rendering of [`ApiError`] as a gRPC status.

use crate::api::TokenApi;
use crate::domain::IssueError;
use crate::pb;
use crate::policy::{Authn, Denial};
use crate::telemetry::metrics::Method;
pub use pb::token_service_server::{TokenService, TokenServiceServer};
use tonic::{Request, Response, Status};

/// The one mapping from issuer errors to gRPC status codes: bad input is
/// INVALID_ARGUMENT naming the field and the rule, an unknown app NOT_FOUND.
impl From<IssueError> for Status {
    fn from(e: IssueError) -> Self {
        match &e {
            IssueError::Invalid(_) => Status::invalid_argument(e.to_string()),
            IssueError::UnknownApp(_) => Status::not_found(e.to_string()),
        }
    }
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

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn build_rtc_token(
        &self,
        request: Request<pb::BuildRtcTokenRequest>,
    ) -> Result<Response<pb::BuildRtcTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildRtcToken, |a| {
            a.build_rtc_token(&who, request.into_inner())
        })
    }

    async fn build_rtc_token_with_privileges(
        &self,
        request: Request<pb::BuildRtcTokenWithPrivilegesRequest>,
    ) -> Result<Response<pb::BuildRtcTokenWithPrivilegesResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildRtcTokenWithPrivileges, |a| {
            a.build_rtc_token_with_privileges(&who, request.into_inner())
        })
    }

    async fn build_rtc_rtm_token(
        &self,
        request: Request<pb::BuildRtcRtmTokenRequest>,
    ) -> Result<Response<pb::BuildRtcRtmTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildRtcRtmToken, |a| {
            a.build_rtc_rtm_token(&who, request.into_inner())
        })
    }

    async fn build_rtm_token(
        &self,
        request: Request<pb::BuildRtmTokenRequest>,
    ) -> Result<Response<pb::BuildRtmTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildRtmToken, |a| {
            a.build_rtm_token(&who, request.into_inner())
        })
    }

    async fn build_chat_user_token(
        &self,
        request: Request<pb::BuildChatUserTokenRequest>,
    ) -> Result<Response<pb::BuildChatUserTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildChatUserToken, |a| {
            a.build_chat_user_token(&who, request.into_inner())
        })
    }

    async fn build_chat_app_token(
        &self,
        request: Request<pb::BuildChatAppTokenRequest>,
    ) -> Result<Response<pb::BuildChatAppTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildChatAppToken, |a| {
            a.build_chat_app_token(&who, request.into_inner())
        })
    }

    async fn build_fpa_token(
        &self,
        request: Request<pb::BuildFpaTokenRequest>,
    ) -> Result<Response<pb::BuildFpaTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildFpaToken, |a| {
            a.build_fpa_token(&who, request.into_inner())
        })
    }

    async fn build_apaas_token(
        &self,
        request: Request<pb::BuildApaasTokenRequest>,
    ) -> Result<Response<pb::BuildApaasTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildApaasToken, |a| {
            a.build_apaas_token(&who, request.into_inner())
        })
    }

    async fn build_token(
        &self,
        request: Request<pb::BuildTokenRequest>,
    ) -> Result<Response<pb::BuildTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildToken, |a| {
            a.build_token(&who, request.into_inner())
        })
    }

    async fn inspect_token(
        &self,
        request: Request<pb::InspectTokenRequest>,
    ) -> Result<Response<pb::InspectTokenResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::InspectToken, |a| {
            a.inspect_token(&who, request.into_inner())
        })
    }

    async fn build_agent_session(
        &self,
        request: Request<pb::BuildAgentSessionRequest>,
    ) -> Result<Response<pb::BuildAgentSessionResponse>, Status> {
        let who = authn(&request);
        self.grpc(Method::BuildAgentSession, |a| {
            a.build_agent_session(&who, request.into_inner())
        })
    }
}

#[cfg(test)]
mod tests {
    use agora_token::{AppCertificate, AppId};

    use super::*;
    use crate::api::{ApiError, RETRY_AFTER};
    use crate::domain::{AppCredentials, Issuer};
    use crate::domain::{IssueError, rules::Violation};
    use crate::policy::{Denial, Identity};
    use crate::state::Shared;
    use crate::telemetry::metrics::{Method, Transport};
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
    fn issue_errors_map_to_status_codes() {
        let s = Status::from(IssueError::Invalid(Violation::new("uid", "bad")));
        assert_eq!((s.code(), s.message()), (Code::InvalidArgument, "uid: bad"));
        let s = Status::from(IssueError::UnknownApp("x".into()));
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().starts_with("app_id"));
        let s = Status::from(ApiError::Denied(Denial::RateLimited {
            retry_after: std::time::Duration::from_millis(1500),
        }));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.metadata().get(RETRY_AFTER).unwrap(), "2");
        let s = Status::from(ApiError::Denied(Denial::Unauthenticated("x")));
        assert_eq!(s.code(), Code::Unauthenticated);
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
