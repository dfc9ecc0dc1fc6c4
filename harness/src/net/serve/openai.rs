//! The OpenAI-style frontend (what vLLM speaks for embedding models): `/v1/models` and
//! `/v1/embeddings` (strings, token ids, base64), with the model's tokenizer and pooling.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::embed;
use std::sync::atomic::Ordering::Relaxed;

use super::state::{body_error, unix_now, AppState};
use crate::net::kserve::{self, ServeError};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/models", get(openai_models))
        .route("/v1/embeddings", post(embeddings))
}

pub(super) fn openai_error(e: &ServeError) -> Response {
    let code = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match e.status {
        400 | 413 => "BadRequestError",
        404 => "NotFoundError",
        _ => "ServerError",
    };
    (
        code,
        axum::Json(
            json!({ "object": "error", "message": e.message, "type": kind, "code": e.status }),
        ),
    )
        .into_response()
}

async fn openai_models(State(s): State<Arc<AppState>>) -> Response {
    let max_len = s.embedder.as_ref().map(|e| e.max_tokens).ok();
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": s.sig.name,
            "object": "model",
            "created": s.created,
            "owned_by": "harness",
            "root": s.sig.name,
            "max_model_len": max_len,
        }],
    }))
    .into_response()
}

/// Most inputs in one embeddings request (OpenAI's own limit).
const MAX_EMBED_INPUTS: usize = 2048;

async fn embeddings(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = do_embeddings(&s, body).await;
    match r {
        Ok(v) => {
            s.metrics.response("openai-embeddings", 200);
            axum::Json(v).into_response()
        }
        Err(e) => {
            s.metrics.response("openai-embeddings", e.status);
            openai_error(&e)
        }
    }
}

async fn do_embeddings(
    s: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ServeError> {
    let body = body.map_err(|r| body_error(r, s.max_body))?;
    let req: Value = serde_json::from_slice(&body)
        .map_err(|e| ServeError::bad(format!("the request is not JSON: {e}")))?;
    let model = req
        .get("model")
        .and_then(|m| m.as_str())
        .ok_or_else(|| ServeError::bad("'model' (a string) is required"))?;
    if model != s.sig.name {
        return Err(ServeError::not_found(format!(
            "The model `{model}` does not exist; this server has `{}`",
            s.sig.name
        )));
    }
    let embedder = s
        .embedder
        .as_ref()
        .map_err(|why| ServeError::bad(why.clone()))?;
    let base64 = match req.get("encoding_format").and_then(|v| v.as_str()) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ServeError::bad(format!(
                "encoding_format '{other}' is not one of float, base64"
            )))
        }
    };
    let input = req.get("input").ok_or_else(|| {
        ServeError::bad("'input' is required: a string, a list of strings, or token ids")
    })?;
    let seqs: Vec<Vec<i64>> = match input {
        Value::String(t) => embedder
            .tokenize(std::slice::from_ref(t))
            .map_err(ServeError::bad)?,
        Value::Array(items) if items.is_empty() => {
            return Err(ServeError::bad("'input' is an empty list"))
        }
        Value::Array(items) if items.iter().all(|i| i.is_string()) => {
            let texts: Vec<String> = items
                .iter()
                .map(|i| i.as_str().unwrap_or_default().to_string())
                .collect();
            embedder.tokenize(&texts).map_err(ServeError::bad)?
        }
        Value::Array(items) if items.iter().all(|i| i.is_i64() || i.is_u64()) => {
            vec![token_list(items)?]
        }
        Value::Array(items) if items.iter().all(|i| i.is_array()) => items
            .iter()
            .map(|i| token_list(i.as_array().map(|a| a.as_slice()).unwrap_or(&[])))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ServeError::bad(
                "'input' must be a string, a list of strings, a list of token ids, or a list of such lists",
            ))
        }
    };
    if seqs.len() > MAX_EMBED_INPUTS {
        return Err(ServeError::bad(format!(
            "{} inputs in one request; at most {MAX_EMBED_INPUTS}",
            seqs.len()
        )));
    }
    for (i, q) in seqs.iter().enumerate() {
        if q.is_empty() {
            return Err(ServeError::bad(format!("input {i} has no tokens")));
        }
        if q.len() > embedder.max_tokens {
            return Err(ServeError::bad(format!(
                "input {i} is {} tokens; this model takes at most {}",
                q.len(),
                embedder.max_tokens
            )));
        }
        if let Some(v) = s.sig.vocab_size {
            if let Some(bad) = q.iter().find(|&&t| t < 0 || t >= v as i64) {
                return Err(ServeError::bad(format!(
                    "input {i} holds token id {bad}, outside the vocabulary 0..{v}"
                )));
            }
        }
    }
    let names: Vec<String> = s.sig.inputs.iter().map(|i| i.name.clone()).collect();
    let lengths: Vec<usize> = seqs.iter().map(|q| q.len()).collect();
    let tokens: usize = lengths.iter().sum();
    let inputs = embed::bert_batch(&seqs, &names);
    let out = s.infer(inputs, true).await?;
    let hidden = out
        .outputs
        .iter()
        .find(|o| o.name == "last_hidden_state")
        .or_else(|| out.outputs.iter().find(|o| o.shape.len() == 3))
        .or_else(|| out.outputs.first())
        .ok_or_else(|| ServeError::new(500, "the model gave no outputs"))?;
    let vecs = embed::pool(hidden, &lengths, embedder.pooling, embedder.normalize)
        .map_err(|e| ServeError::new(500, e))?;
    if let Some(d) = req.get("dimensions").filter(|d| !d.is_null()) {
        let hidden_size = vecs.first().map_or(0, |v| v.len());
        if d.as_u64() != Some(hidden_size as u64) {
            return Err(ServeError::bad(format!(
                "dimensions {d} is not supported; this model's embeddings have {hidden_size}"
            )));
        }
    }
    use base64::Engine as _;
    let data: Vec<Value> = vecs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let emb = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::Array(v.iter().map(|&x| kserve::f32_json(x)).collect())
            };
            json!({ "object": "embedding", "index": i, "embedding": emb })
        })
        .collect();
    Ok(json!({
        "id": format!("embd-{}", s.next_id.fetch_add(1, Relaxed)),
        "object": "list",
        "created": unix_now(),
        "model": s.sig.name,
        "data": data,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
}

fn token_list(items: &[Value]) -> Result<Vec<i64>, ServeError> {
    items
        .iter()
        .map(|t| {
            t.as_i64()
                .ok_or_else(|| ServeError::bad(format!("token id {t} is not an integer")))
        })
        .collect()
}
