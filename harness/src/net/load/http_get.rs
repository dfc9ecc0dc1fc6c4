//! A plain GET of the target URL: the load generator's own ceiling (against a health
//! endpoint), comparable with wrk and oha.

use std::collections::BTreeMap;
use std::sync::Arc;

use runtimes::{HostTensor, ModelInfo};

use super::protocol::{HttpRequest, LoadError, LoadOptions, Protocol, Scenario};
use crate::net::client::{request_bytes, Target};

#[derive(Debug)]
pub struct HttpGet;

impl Protocol for HttpGet {
    fn name(&self) -> &'static str {
        "http-get"
    }

    fn about(&self) -> &'static str {
        "A plain GET of the target URL: the load generator's own ceiling"
    }

    fn default_port(&self) -> u16 {
        8000
    }

    fn shaped(&self) -> bool {
        false
    }

    fn prepare(
        &self,
        _o: &LoadOptions,
        target: &Target,
        _info: &ModelInfo,
        _batch: usize,
        _seq: usize,
    ) -> Result<Scenario, LoadError> {
        Ok(Scenario {
            request: Box::new(HttpRequest {
                bytes: Arc::new(request_bytes(target, "GET", "", &[], &[])),
                expect_binary: false,
                expect_body: false,
            }),
            request_bytes: 0,
            shapes: BTreeMap::new(),
            batch: 1,
            seq: None,
        })
    }

    fn fetch_outputs(
        &self,
        _o: &LoadOptions,
        _target: &Target,
        _inputs: &[HostTensor],
    ) -> Result<Vec<HostTensor>, String> {
        Err("http-get fetches a page, not tensors".into())
    }
}
