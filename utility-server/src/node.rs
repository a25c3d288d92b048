//! `seer.v1.Node`: what this process says about itself.

use seer_proto::v1::{GetInfoRequest, NodeInfo, Role, node_server::Node};
use tonic::{Request, Response, Status};

/// The software version of this binary (its crate version).
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Serves `seer.v1.Node` for the utility-server.
#[derive(Debug, Clone)]
pub struct NodeService {
    info: NodeInfo,
}

impl NodeService {
    /// The utility-server's identity. No CKKS parameter set is configured yet, so its id is empty.
    #[must_use]
    pub fn new() -> Self {
        Self {
            info: NodeInfo {
                role: Role::UtilityServer.into(),
                software_version: SOFTWARE_VERSION.to_owned(),
                ckks_parameter_set_id: String::new(),
            },
        }
    }
}

impl Default for NodeService {
    fn default() -> Self {
        Self::new()
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    #[tracing::instrument(name = "Node.GetInfo", skip_all)]
    async fn get_info(
        &self,
        _request: Request<GetInfoRequest>,
    ) -> Result<Response<NodeInfo>, Status> {
        Ok(Response::new(self.info.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_role_and_version() {
        let info = NodeService::new()
            .get_info(Request::new(GetInfoRequest {}))
            .await
            .expect("get_info never fails")
            .into_inner();
        assert_eq!(info.role(), Role::UtilityServer);
        assert_eq!(info.software_version, env!("CARGO_PKG_VERSION"));
    }
}
