//! `weir crds`: prints the `Canary` CustomResourceDefinition as YAML, for
//! `weir crds | kubectl apply -f -` and to regenerate the committed copy in
//! `crds/yaml/canary.yaml`.

use std::io::Write;

use anyhow::{Context, Result};

use crate::exit::Code;

/// No options: the CRD depends only on the compiled-in types.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Writes the CRD YAML to stdout.
pub fn run(_args: &Args) -> Result<Code> {
    let yaml = weir_crds::crd_yaml().context("serializing the Canary CRD")?;
    std::io::stdout()
        .lock()
        .write_all(yaml.as_bytes())
        .context("writing the CRD to stdout")?;
    Ok(Code::Success)
}
