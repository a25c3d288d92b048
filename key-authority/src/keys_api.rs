//! `seer.v1.Keys`: the public key material, streamed in chunks.
//!
//! Public keys are public: any caller may fetch them. The objects are SEER frames with a
//! BLAKE3 checksum, and [`KeySetInfo::public_key_blake3`] lets a meter pin the public key.

use std::pin::Pin;
use std::sync::Arc;

use seer_proto::v1::keys_server::Keys;
use seer_proto::v1::{
    GetKeyRequest, KeyChunk, KeyKind, KeySetInfo, ListKeySetsRequest, ListKeySetsResponse,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::keys::KeyStore;

/// Size of one streamed chunk.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Serves `seer.v1.Keys` from a [`KeyStore`].
#[derive(Debug, Clone)]
pub struct KeysApi {
    store: Arc<KeyStore>,
}

impl KeysApi {
    /// Serves the given store.
    pub fn new(store: Arc<KeyStore>) -> Self {
        Self { store }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<KeyChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Keys for KeysApi {
    #[tracing::instrument(name = "Keys.ListKeySets", skip_all)]
    async fn list_key_sets(
        &self,
        _request: Request<ListKeySetsRequest>,
    ) -> Result<Response<ListKeySetsResponse>, Status> {
        let key_sets = self
            .store
            .iter()
            .map(|(id, set)| KeySetInfo {
                parameter_set_id: id.to_string(),
                galois_steps: set.galois_steps().to_vec(),
                public_key_bytes: set.public_key_bytes().len() as u64,
                relin_keys_bytes: set.relin_keys_bytes().len() as u64,
                galois_keys_bytes: set.galois_keys_bytes().map_or(0, |g| g.len() as u64),
                public_key_blake3: blake3::hash(set.public_key_bytes()).to_hex().to_string(),
            })
            .collect();
        Ok(Response::new(ListKeySetsResponse { key_sets }))
    }

    type GetKeyStream = ChunkStream;

    #[tracing::instrument(name = "Keys.GetKey", skip_all, fields(parameter_set = %request.get_ref().parameter_set_id, kind = request.get_ref().kind))]
    async fn get_key(
        &self,
        request: Request<GetKeyRequest>,
    ) -> Result<Response<Self::GetKeyStream>, Status> {
        let request = request.into_inner();
        let set = self.store.get(&request.parameter_set_id).ok_or_else(|| {
            Status::not_found(format!(
                "no key set for parameter set {:?}",
                request.parameter_set_id
            ))
        })?;
        let bytes = match KeyKind::try_from(request.kind) {
            Ok(KeyKind::Public) => Arc::clone(set.public_key_bytes()),
            Ok(KeyKind::Relin) => Arc::clone(set.relin_keys_bytes()),
            Ok(KeyKind::Galois) => set
                .galois_keys_bytes()
                .cloned()
                .ok_or_else(|| Status::not_found("this key set has no galois keys"))?,
            _ => {
                return Err(Status::invalid_argument(
                    "kind must be PUBLIC, RELIN or GALOIS",
                ));
            }
        };
        let total = bytes.len();
        let chunks = (0..total.div_ceil(CHUNK_BYTES)).map(move |i| {
            let start = i * CHUNK_BYTES;
            let end = (start + CHUNK_BYTES).min(total);
            Ok(KeyChunk {
                total_bytes: total as u64,
                offset: start as u64,
                data: bytes[start..end].to_vec(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}
