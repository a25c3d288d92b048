//! `seer.v1.Node`: what a process says about itself.

use seer_proto::v1::{GetInfoRequest, NodeInfo, Role, node_server::Node};
use tonic::{Request, Response, Status};

/// Serves `seer.v1.Node` with a fixed identity.
#[derive(Debug, Clone)]
pub struct NodeService {
    info: NodeInfo,
}

impl NodeService {
    /// The identity of a program: its role, its software version and its CKKS parameter-set
    /// id (empty while it has none configured).
    #[must_use]
    pub fn new(role: Role, software_version: &str, ckks_parameter_set_id: &str) -> Self {
        Self {
            info: NodeInfo {
                role: role.into(),
                software_version: software_version.to_owned(),
                ckks_parameter_set_id: ckks_parameter_set_id.to_owned(),
            },
        }
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
        let info = NodeService::new(Role::KeyAuthority, "1.2.3", "ckks1-n8192-q60-s40x2-p60")
            .get_info(Request::new(GetInfoRequest {}))
            .await
            .expect("get_info never fails")
            .into_inner();
        assert_eq!(info.role(), Role::KeyAuthority);
        assert_eq!(info.software_version, "1.2.3");
        assert_eq!(info.ckks_parameter_set_id, "ckks1-n8192-q60-s40x2-p60");
    }
}
