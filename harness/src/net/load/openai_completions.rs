//! OpenAI-style POST /v1/completions with stream=true (vLLM): each request's token timings,
//! from which the row gets vLLM's benchmark metrics (TTFT, TPOT, ITL, goodput against
//! `--slo`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtimes::{HostTensor, ModelInfo};
use serde_json::{json, Value};

use super::protocol::{
    json_post, status_error, Finished, LoadError, LoadOptions, NetWorker, Protocol, Request,
    Scenario,
};
use super::streaming::streaming_stats;
use super::words;
use crate::measure::StepInfo;
use crate::net::client::{Http1, NetError, SseParser, Target};
use crate::results::ServedInfo;

#[derive(Debug)]
pub struct OpenaiCompletions;

impl Protocol for OpenaiCompletions {
    fn name(&self) -> &'static str {
        "openai-completions"
    }

    fn about(&self) -> &'static str {
        "OpenAI-style POST /v1/completions with stream=true (vLLM): TTFT, TPOT, ITL"
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
        let model = o.model_name()?;
        let mut rng = words::scenario_rng(o.seed, batch, seq);
        let body = serde_json::to_vec(&json!({
            "model": model,
            "prompt": words::sentence(seq, &mut rng),
            "max_tokens": o.max_tokens,
            "stream": true,
            "ignore_eos": true,
            "temperature": 0.0,
            "stream_options": { "include_usage": true },
        }))
        .unwrap_or_default();
        let req = json_post(target, "/v1/completions", &body);
        Ok(Scenario {
            request: Box::new(StreamRequest(Arc::new(req))),
            request_bytes: body.len(),
            shapes: BTreeMap::from([("prompt_words".to_string(), vec![seq])]),
            batch: 1,
            seq: Some(seq),
        })
    }

    fn fetch_outputs(
        &self,
        _o: &LoadOptions,
        _target: &Target,
        _inputs: &[HostTensor],
    ) -> Result<Vec<HostTensor>, String> {
        Err("openai-completions answers with text, not tensors: nothing to compare".into())
    }

    fn add_statistics(&self, ctx: &Finished, served: &mut ServedInfo) {
        served.streaming = Some(streaming_stats(ctx.steps, ctx.window_s, &ctx.options.slo));
    }
}

struct StreamRequest(Arc<Vec<u8>>);

impl Request for StreamRequest {
    fn worker(&self, target: &Target, timeout: Duration) -> Result<Box<dyn NetWorker>, LoadError> {
        Ok(Box::new(StreamWorker {
            http: Http1::new(target, timeout),
            request: self.0.clone(),
        }))
    }
}

/// Sends the request and follows its server-sent events to `data: [DONE]`, timing each
/// token.
struct StreamWorker {
    http: Http1,
    request: Arc<Vec<u8>>,
}

impl NetWorker for StreamWorker {
    fn step(&mut self) -> Result<Option<StepInfo>, NetError> {
        let sent = Instant::now();
        let mut parser = SseParser::default();
        let mut times: Vec<Instant> = Vec::new();
        let mut usage_tokens: Option<u64> = None;
        let mut done = false;
        let mut bad: Option<String> = None;
        let mut body_head = Vec::new();
        let (status, _) = self.http.exchange(&self.request, &mut |piece: &[u8]| {
            let now = Instant::now();
            if body_head.len() < 300 {
                body_head.extend_from_slice(&piece[..piece.len().min(300)]);
            }
            for data in parser.feed(piece) {
                if data.trim() == "[DONE]" {
                    done = true;
                    continue;
                }
                match serde_json::from_str::<Value>(&data) {
                    Ok(v) => {
                        let text = v["choices"][0]["text"]
                            .as_str()
                            .or_else(|| v["choices"][0]["delta"]["content"].as_str())
                            .unwrap_or("");
                        if !text.is_empty() {
                            times.push(now);
                        }
                        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                            usage_tokens = Some(n);
                        }
                    }
                    Err(e) => bad = Some(format!("an event is not JSON: {e}")),
                }
            }
        })?;
        if status != 200 {
            return Err(status_error(status, &body_head));
        }
        if let Some(b) = bad {
            return Err(NetError::new("bad-response", b));
        }
        if !done {
            return Err(NetError::new(
                "bad-response",
                "the stream ended without data: [DONE]",
            ));
        }
        let Some(first) = times.first() else {
            return Err(NetError::new(
                "bad-response",
                "the stream carried no tokens",
            ));
        };
        Ok(Some(StepInfo {
            ttft_ns: first.duration_since(sent).as_nanos() as u64,
            token_gaps_ns: times
                .windows(2)
                .map(|w| w[1].duration_since(w[0]).as_nanos() as u64)
                .collect(),
            output_tokens: usage_tokens.unwrap_or(times.len() as u64),
        }))
    }

    fn connects(&self) -> u64 {
        self.http.reconnects
    }
}
