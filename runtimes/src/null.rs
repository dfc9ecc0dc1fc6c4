//! The null runtime: loads nothing, runs nothing. Measuring it gives the harness's own cost
//! per iteration (clock reads, histogram record, loop), which every other figure includes.

use crate::model::{ModelFiles, ModelInfo};
use crate::tensor::HostTensor;
use crate::{Availability, LoadOptions, Loaded, Runtime, RuntimeError};

pub struct NullRuntime;

impl Runtime for NullRuntime {
    fn name(&self) -> &'static str {
        "null"
    }

    fn about(&self) -> &'static str {
        "does nothing: measures the harness's own per-iteration cost"
    }

    fn capabilities(&self) -> crate::Capabilities {
        crate::Capabilities {
            computes: false,
            reference: false,
        }
    }

    fn check(&self, opts: &LoadOptions) -> Availability {
        if opts.device != crate::Device::Cpu {
            return Availability::Unavailable {
                reason: "the null runtime measures the harness on the CPU".into(),
            };
        }
        Availability::Ready {
            version: env!("CARGO_PKG_VERSION").to_string(),
            detail: "does no work: measures the harness's per-iteration overhead".into(),
        }
    }

    fn load(
        &self,
        _model: &ModelFiles,
        _info: &ModelInfo,
        _opts: &LoadOptions,
    ) -> Result<Box<dyn Loaded>, RuntimeError> {
        Ok(Box::new(NullLoaded))
    }
}

/// A loaded null model; public so the harness can measure its overhead without a model.
pub struct NullLoaded;

impl Loaded for NullLoaded {
    fn applied(&self) -> Vec<(String, String)> {
        vec![("work".into(), "none".into())]
    }

    fn prepare(&mut self, _inputs: &[HostTensor]) -> Result<(), RuntimeError> {
        Ok(())
    }

    fn run(&mut self) -> Result<(), RuntimeError> {
        std::hint::black_box(());
        Ok(())
    }

    fn infer(&mut self) -> Result<Vec<HostTensor>, RuntimeError> {
        Ok(Vec::new())
    }
}
