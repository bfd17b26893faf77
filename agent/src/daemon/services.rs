//! The gRPC services on the agent's socket, each call handed to its service by the
//! service name that starts the request's path (`/<package>.<Service>/<Method>`).
//!
//! This is what tonic's router did, without its per-call work: the router is an axum
//! `Router`, which matched every path against its routes, stored the matched tail in
//! the request's extensions, wrapped the request body and the response body in one more
//! box each and boxed one more future, all for three fixed names. Here a call costs a
//! comparison of the name with three constants and goes straight to the generated
//! server, whose future (boxed by the generated code) is passed on as it is. A path
//! naming no service served here gets `Unimplemented`, as from the router.

use std::convert::Infallible;
use std::task::{Context, Poll, ready};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;
use tower::Service;

use super::keys::KeyApi;
use super::keys::proto::key_service_server::KeyServiceServer;
use super::sds::SecretDiscovery;
use super::sds::proto::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use super::server::WorkloadApi;
use super::workload_api::spiffe_workload_api_server::SpiffeWorkloadApiServer;

/// The SPIFFE Workload API, keyward's KeyService and Envoy's SDS, behind one socket.
#[derive(Clone)]
pub struct SocketServices {
    workload: SpiffeWorkloadApiServer<WorkloadApi>,
    keys: KeyServiceServer<KeyApi>,
    sds: SecretDiscoveryServiceServer<SecretDiscovery>,
}

impl SocketServices {
    /// The three services, each answering the calls whose path names it.
    pub fn new(
        workload: SpiffeWorkloadApiServer<WorkloadApi>,
        keys: KeyServiceServer<KeyApi>,
        sds: SecretDiscoveryServiceServer<SecretDiscovery>,
    ) -> Self {
        SocketServices {
            workload,
            keys,
            sds,
        }
    }
}

/// Which service a request path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    Workload,
    Keys,
    Sds,
}

impl Named {
    /// The service `path` (`/<service>/<method>`) names, if it is one of the three and
    /// the path names a method after it.
    fn of(path: &str) -> Option<Named> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        if method.is_empty() {
            return None;
        }
        match service {
            <SpiffeWorkloadApiServer<WorkloadApi> as NamedService>::NAME => Some(Named::Workload),
            <KeyServiceServer<KeyApi> as NamedService>::NAME => Some(Named::Keys),
            <SecretDiscoveryServiceServer<SecretDiscovery> as NamedService>::NAME => {
                Some(Named::Sds)
            }
            _ => None,
        }
    }
}

impl Service<Request<Body>> for SocketServices {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Response<Body>, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The generated servers are always ready; asked all the same, as tower requires.
        ready!(Service::<Request<Body>>::poll_ready(&mut self.workload, cx))?;
        ready!(Service::<Request<Body>>::poll_ready(&mut self.keys, cx))?;
        Service::<Request<Body>>::poll_ready(&mut self.sds, cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match Named::of(req.uri().path()) {
            Some(Named::Workload) => self.workload.call(req),
            Some(Named::Keys) => self.keys.call(req),
            Some(Named::Sds) => self.sds.call(req),
            None => Box::pin(std::future::ready(
                Ok(Status::unimplemented("").into_http()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_names_one_of_the_three_services_or_none() {
        let cases = [
            ("/SpiffeWorkloadAPI/FetchX509SVID", Some(Named::Workload)),
            ("/SpiffeWorkloadAPI/NoSuchMethod", Some(Named::Workload)),
            ("/keyward.v1.KeyService/Sign", Some(Named::Keys)),
            (
                "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
                Some(Named::Sds),
            ),
            ("/SpiffeWorkloadAPI/", None),
            ("/SpiffeWorkloadAPI", None),
            ("SpiffeWorkloadAPI/FetchX509SVID", None),
            ("/spiffeworkloadapi/FetchX509SVID", None),
            ("/grpc.health.v1.Health/Check", None),
            ("/", None),
            ("", None),
        ];
        for (path, named) in cases {
            assert_eq!(Named::of(path), named, "{path}");
        }
    }
}
