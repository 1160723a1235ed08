//! Connecting to an agent's management API and turning gRPC errors into operator messages.

use std::time::Duration;

use pgquorum_proto::management::management_client::ManagementClient;
use tonic::transport::{Channel, Endpoint};

use crate::Failure;

/// Connects to the management API at `endpoint` (host:port).
pub async fn connect(endpoint: &str) -> Result<ManagementClient<Channel>, Failure> {
    let url = if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") };
    let ep = Endpoint::from_shared(url)
        .map_err(|e| Failure::usage(format!("--endpoint {endpoint:?} is not host:port: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    let channel = ep.connect().await.map_err(|e| Failure {
        code: 3,
        message: format!(
            "cannot reach an agent at {endpoint}: {e}. Is the agent running, and is this its grpc.listen \
             address? Set --endpoint or PGQUORUM_ENDPOINT"
        ),
    })?;
    Ok(ManagementClient::new(channel))
}

/// An operator message for a failed call.
pub fn failure(status: tonic::Status) -> Failure {
    match status.code() {
        tonic::Code::Unavailable if status.message().contains("transport") => {
            Failure { code: 3, message: format!("the agent stopped answering: {}", status.message()) }
        }
        tonic::Code::InvalidArgument => Failure::usage(status.message()),
        _ => Failure::failed(status.message()),
    }
}
