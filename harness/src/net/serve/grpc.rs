//! The KServe v2 gRPC service (`inference.GRPCInferenceService`) over the same batcher as
//! the HTTP side. Inputs come as typed contents or raw little-endian bytes (what Triton's
//! clients send); outputs go back as raw bytes, as Triton answers.

use std::sync::Arc;

use runtimes::{DType, TensorData};
use tonic::{Request, Response, Status};

use super::state::AppState;
use crate::net::kserve::{self, RawInput, ServeError};
use crate::net::pb;
use crate::net::tensors::{from_le_bytes, kserve_dtype, to_le_bytes};

pub struct Service {
    pub state: Arc<AppState>,
}

pub fn status(e: &ServeError) -> Status {
    match e.status {
        400 => Status::invalid_argument(&e.message),
        404 => Status::not_found(&e.message),
        413 => Status::resource_exhausted(&e.message),
        503 => Status::unavailable(&e.message),
        504 => Status::deadline_exceeded(&e.message),
        _ => Status::internal(&e.message),
    }
}

fn contents(
    name: &str,
    dtype: DType,
    c: Option<&pb::InferTensorContents>,
    n: usize,
) -> Result<TensorData, ServeError> {
    let c = c.ok_or_else(|| {
        ServeError::bad(format!(
            "input '{name}' has neither contents nor raw_input_contents"
        ))
    })?;
    let data = match dtype {
        DType::Int64 => TensorData::I64(c.int64_contents.clone()),
        DType::Int32 => TensorData::I32(c.int_contents.clone()),
        DType::Float32 => TensorData::F32(c.fp32_contents.clone()),
        DType::Bool => TensorData::Bool(c.bool_contents.clone()),
        _ => {
            return Err(ServeError::bad(format!(
                "input '{name}': datatype {} is not supported here",
                kserve_dtype(dtype).unwrap_or("?")
            )))
        }
    };
    if data.len() != n {
        return Err(ServeError::bad(format!(
            "input '{name}': contents hold {} values, the shape needs {n}",
            data.len()
        )));
    }
    Ok(data)
}

/// Decodes a gRPC infer request into the inputs the HTTP side also validates.
pub fn decode(req: &pb::ModelInferRequest) -> Result<Vec<RawInput>, ServeError> {
    let raw = &req.raw_input_contents;
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(ServeError::bad(format!(
            "{} raw_input_contents for {} inputs; give one per input or none",
            raw.len(),
            req.inputs.len()
        )));
    }
    req.inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let dtype = kserve::parse_dtype(&t.name, &t.datatype)?;
            let n = kserve::elements(&t.shape)?;
            let data = match raw.get(i) {
                Some(bytes) => from_le_bytes(dtype, bytes, n)
                    .map_err(|e| ServeError::bad(format!("input '{}': {e}", t.name)))?,
                None => contents(&t.name, dtype, t.contents.as_ref(), n)?,
            };
            Ok(RawInput {
                name: t.name.clone(),
                datatype: t.datatype.clone(),
                shape: t.shape.clone(),
                data,
            })
        })
        .collect()
}

impl Service {
    async fn infer(
        &self,
        req: pb::ModelInferRequest,
    ) -> Result<pb::ModelInferResponse, ServeError> {
        let s = &self.state;
        if req.model_name != s.sig.name {
            return Err(ServeError::not_found(format!(
                "unknown model '{}'; this server has '{}'",
                req.model_name, s.sig.name
            )));
        }
        let inputs = kserve::validate(&s.sig, decode(&req)?)?;
        let out = s.infer(inputs, false).await?;
        let wanted = (!req.outputs.is_empty())
            .then(|| req.outputs.iter().map(|o| (o.name.clone(), true)).collect());
        let outputs = kserve::select_outputs(&wanted, out.outputs)?;
        Ok(pb::ModelInferResponse {
            model_name: s.sig.name.clone(),
            model_version: "1".into(),
            id: req.id,
            parameters: Default::default(),
            outputs: outputs
                .iter()
                .map(|(t, _)| pb::model_infer_response::InferOutputTensor {
                    name: t.name.clone(),
                    datatype: kserve_dtype(t.data.dtype()).unwrap_or("BYTES").into(),
                    shape: t.shape.iter().map(|&d| d as i64).collect(),
                    parameters: Default::default(),
                    contents: None,
                })
                .collect(),
            raw_output_contents: outputs.iter().map(|(t, _)| to_le_bytes(&t.data)).collect(),
        })
    }

    fn check(&self, name: &str) -> Result<(), Status> {
        if name == self.state.sig.name {
            Ok(())
        } else {
            Err(Status::not_found(format!(
                "unknown model '{name}'; this server has '{}'",
                self.state.sig.name
            )))
        }
    }
}

fn tensor_meta(specs: &[runtimes::TensorSpec]) -> Vec<pb::model_metadata_response::TensorMetadata> {
    specs
        .iter()
        .map(|s| pb::model_metadata_response::TensorMetadata {
            name: s.name.clone(),
            datatype: kserve_dtype(s.dtype).unwrap_or("BYTES").into(),
            shape: kserve::Signature::spec_dims(s),
        })
        .collect()
}

#[tonic::async_trait]
impl pb::grpc_inference_service_server::GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        r: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        self.check(&r.get_ref().name)?;
        Ok(Response::new(pb::ModelReadyResponse { ready: true }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "harness".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![],
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        self.check(&r.get_ref().name)?;
        let sig = &self.state.sig;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: sig.name.clone(),
            versions: vec!["1".into()],
            platform: sig.platform.clone(),
            inputs: tensor_meta(&sig.inputs),
            outputs: tensor_meta(&sig.outputs),
        }))
    }

    async fn model_infer(
        &self,
        r: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        match self.infer(r.into_inner()).await {
            Ok(resp) => {
                self.state.metrics.response("kserve-grpc", 200);
                Ok(Response::new(resp))
            }
            Err(e) => {
                self.state.metrics.response("kserve-grpc", e.status);
                Err(status(&e))
            }
        }
    }
}
