//! OpenAI-style POST /v1/embeddings (vLLM, our server): `--batch` sentences of `--seq`
//! one-token words per request; the row records the server's prompt tokens per request.

use std::collections::BTreeMap;
use std::sync::Arc;

use runtimes::{HostTensor, ModelInfo};
use serde_json::{json, Value};

use super::protocol::{
    json_post, Finished, HttpRequest, LoadError, LoadOptions, Protocol, Scenario,
};
use super::words;
use crate::net::client::{Http1, Target};
use crate::results::ServedInfo;

#[derive(Debug)]
pub struct OpenaiEmbeddings;

impl OpenaiEmbeddings {
    /// The request's bytes and its body's size.
    fn request(
        &self,
        o: &LoadOptions,
        target: &Target,
        batch: usize,
        seq: usize,
    ) -> Result<(Vec<u8>, usize), LoadError> {
        let model = o.model_name()?;
        let mut rng = words::scenario_rng(o.seed, batch, seq);
        let texts: Vec<String> = (0..batch).map(|_| words::sentence(seq, &mut rng)).collect();
        let body =
            serde_json::to_vec(&json!({ "model": model, "input": texts })).unwrap_or_default();
        Ok((json_post(target, "/v1/embeddings", &body), body.len()))
    }
}

impl Protocol for OpenaiEmbeddings {
    fn name(&self) -> &'static str {
        "openai-embeddings"
    }

    fn about(&self) -> &'static str {
        "OpenAI-style POST /v1/embeddings (vLLM, our server)"
    }

    fn default_port(&self) -> u16 {
        8000
    }

    fn prepare(
        &self,
        o: &LoadOptions,
        target: &Target,
        _info: &ModelInfo,
        batch: usize,
        seq: usize,
    ) -> Result<Scenario, LoadError> {
        let (req, body_len) = self.request(o, target, batch, seq)?;
        Ok(Scenario {
            request_bytes: body_len,
            request: Box::new(HttpRequest {
                bytes: Arc::new(req),
                expect_binary: false,
                expect_body: true,
            }),
            shapes: BTreeMap::from([("sentences".to_string(), vec![batch, seq])]),
            batch,
            seq: Some(seq),
        })
    }

    fn fetch_outputs(
        &self,
        _o: &LoadOptions,
        _target: &Target,
        _inputs: &[HostTensor],
    ) -> Result<Vec<HostTensor>, String> {
        Err("openai-embeddings takes text, not tensors: compare embeddings with the model's reference".into())
    }

    /// The server's usage.prompt_tokens per request, from one more answer.
    fn add_statistics(&self, ctx: &Finished, served: &mut ServedInfo) {
        let o = ctx.options;
        let (batch, seq) = (ctx.scenario.batch, ctx.scenario.seq.unwrap_or(0));
        let Ok((req, _)) = self.request(o, ctx.target, batch, seq) else {
            return;
        };
        let mut c = Http1::new(ctx.target, o.timeout);
        served.prompt_tokens_per_request = c
            .call(&req)
            .ok()
            .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .and_then(|v| v["usage"]["prompt_tokens"].as_f64());
    }
}
