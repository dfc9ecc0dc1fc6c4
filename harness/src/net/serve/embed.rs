//! Sentence embeddings the way the checkpoint's sentence-transformers configuration says:
//! the model's own tokenizer (`tokenizer.json`), truncation at `max_seq_length`, the pooling
//! of `1_Pooling/config.json` (mean, CLS or max over the real tokens) and L2 normalisation when
//! `modules.json` lists a Normalize module. What `/v1/embeddings` serves.

use std::path::Path;

use runtimes::{HostTensor, TensorData};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Max,
}

impl Pooling {
    pub fn as_str(&self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
        }
    }
}

pub struct Embedder {
    tokenizer: tokenizers::Tokenizer,
    pub max_tokens: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    /// Where the configuration came from, for the server's start-up line.
    pub source: String,
}

fn read_json(p: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

impl Embedder {
    /// Reads the tokenizer and the pooling configuration of the checkpoint in `dir`.
    /// `max_positions` bounds the token count when nothing else says.
    pub fn load(dir: &Path, max_positions: Option<usize>) -> Result<Embedder, String> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(format!(
                "{} is missing: /v1/embeddings needs the checkpoint's tokenizer.json next to the model",
                tok_path.display()
            ));
        }
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| format!("could not read {}: {e}", tok_path.display()))?;
        let st = read_json(&dir.join("sentence_bert_config.json"));
        let max_tokens = st
            .as_ref()
            .and_then(|v| v.get("max_seq_length"))
            .and_then(|v| v.as_u64())
            .map(|n| n as usize)
            .or(max_positions)
            .unwrap_or(512);
        let max_tokens = max_positions.map_or(max_tokens, |m| max_tokens.min(m));
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| format!("tokenizer truncation: {e}"))?;
        let modules = read_json(&dir.join("modules.json"));
        let mut pooling_dir = None;
        let mut normalize = false;
        let mut source = "defaults (mean pooling, no normalisation: no modules.json)".to_string();
        if let Some(Value::Array(ms)) = &modules {
            source = "modules.json".into();
            for m in ms {
                let ty = m.get("type").and_then(|v| v.as_str()).unwrap_or("");
                if ty.ends_with("Pooling") {
                    pooling_dir = m.get("path").and_then(|v| v.as_str()).map(|s| dir.join(s));
                }
                if ty.ends_with("Normalize") {
                    normalize = true;
                }
            }
        }
        let pooling = match pooling_dir.and_then(|d| read_json(&d.join("config.json"))) {
            Some(cfg) => {
                let on = |k: &str| cfg.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
                if on("pooling_mode_mean_tokens") {
                    Pooling::Mean
                } else if on("pooling_mode_cls_token") {
                    Pooling::Cls
                } else if on("pooling_mode_max_tokens") {
                    Pooling::Max
                } else {
                    return Err(
                        "1_Pooling/config.json asks for a pooling mode the server does not have (mean, cls, max)"
                            .into(),
                    );
                }
            }
            None => Pooling::Mean,
        };
        Ok(Embedder {
            tokenizer,
            max_tokens,
            pooling,
            normalize,
            source,
        })
    }

    /// Token ids of each text, special tokens added, truncated.
    pub fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<i64>>, String> {
        texts
            .iter()
            .map(|t| {
                self.tokenizer
                    .encode(t.as_str(), true)
                    .map(|e| e.get_ids().iter().map(|&i| i as i64).collect())
                    .map_err(|e| format!("tokenizing failed: {e}"))
            })
            .collect()
    }
}

/// The three BERT inputs for token sequences of different lengths, padded with 0 (mask 0).
pub fn bert_batch(seqs: &[Vec<i64>], input_names: &[String]) -> Vec<HostTensor> {
    let rows = seqs.len();
    let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut ids = vec![0i64; rows * len];
    let mut mask = vec![0i64; rows * len];
    for (r, s) in seqs.iter().enumerate() {
        ids[r * len..r * len + s.len()].copy_from_slice(s);
        mask[r * len..r * len + s.len()]
            .iter_mut()
            .for_each(|m| *m = 1);
    }
    input_names
        .iter()
        .map(|name| {
            let l = name.to_ascii_lowercase();
            let data = if l.contains("mask") {
                mask.clone()
            } else if l.contains("type") {
                vec![0; rows * len]
            } else {
                ids.clone()
            };
            HostTensor::new(name.clone(), vec![rows, len], TensorData::I64(data))
        })
        .collect()
}

/// Pools the encoder's hidden states `[rows, len, hidden]` over each row's first
/// `lengths[r]` tokens; a `[rows, hidden]` output is already pooled and passes through.
pub fn pool(
    hidden: &HostTensor,
    lengths: &[usize],
    pooling: Pooling,
    normalize: bool,
) -> Result<Vec<Vec<f32>>, String> {
    let TensorData::F32(h) = &hidden.data else {
        return Err(format!("output '{}' is not float32", hidden.name));
    };
    let mut out: Vec<Vec<f32>> = match hidden.shape.as_slice() {
        [rows, dim] if *rows == lengths.len() => h.chunks(*dim).map(|c| c.to_vec()).collect(),
        [rows, len, dim] if *rows == lengths.len() => (0..*rows)
            .map(|r| {
                let n = lengths[r].min(*len).max(1);
                let tok = |t: usize| &h[(r * len + t) * dim..(r * len + t + 1) * dim];
                match pooling {
                    Pooling::Cls => tok(0).to_vec(),
                    Pooling::Mean => {
                        let mut acc = vec![0f64; *dim];
                        for t in 0..n {
                            for (a, &x) in acc.iter_mut().zip(tok(t)) {
                                *a += x as f64;
                            }
                        }
                        acc.iter().map(|a| (a / n as f64) as f32).collect()
                    }
                    Pooling::Max => {
                        let mut acc = vec![f32::NEG_INFINITY; *dim];
                        for t in 0..n {
                            for (a, &x) in acc.iter_mut().zip(tok(t)) {
                                *a = a.max(x);
                            }
                        }
                        acc
                    }
                }
            })
            .collect(),
        s => {
            return Err(format!(
            "output '{}' has shape {s:?}; embeddings need [rows, tokens, hidden] or [rows, hidden]",
            hidden.name
        ))
        }
    };
    if normalize {
        for v in &mut out {
            let norm = v
                .iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum::<f64>()
                .sqrt();
            if norm > 1e-12 {
                v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_counts_only_real_tokens_and_normalises() {
        // Two rows, 3 positions, hidden 2; row 1 has one real token.
        let h = HostTensor::new(
            "last_hidden_state",
            vec![2, 3, 2],
            TensorData::F32(vec![
                1.0, 0.0, 3.0, 0.0, 100.0, 100.0, 0.0, 2.0, 9.0, 9.0, 9.0, 9.0,
            ]),
        );
        let p = pool(&h, &[2, 1], Pooling::Mean, false).unwrap();
        assert_eq!(p, vec![vec![2.0, 0.0], vec![0.0, 2.0]]);
        let n = pool(&h, &[2, 1], Pooling::Mean, true).unwrap();
        assert_eq!(n, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(
            pool(&h, &[2, 1], Pooling::Cls, false).unwrap()[0],
            vec![1.0, 0.0]
        );
        assert_eq!(
            pool(&h, &[3, 1], Pooling::Max, false).unwrap()[0],
            vec![100.0, 100.0]
        );
        assert!(pool(&h, &[1], Pooling::Mean, false).is_err());
    }

    #[test]
    fn bert_batch_pads_with_a_zero_mask() {
        let names: Vec<String> = ["input_ids", "attention_mask", "token_type_ids"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let b = bert_batch(&[vec![2, 7, 3], vec![2, 3]], &names);
        assert_eq!(b[0].data, TensorData::I64(vec![2, 7, 3, 2, 3, 0]));
        assert_eq!(b[1].data, TensorData::I64(vec![1, 1, 1, 1, 1, 0]));
        assert_eq!(b[2].data, TensorData::I64(vec![0; 6]));
    }
}
