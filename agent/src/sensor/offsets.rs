//! Resolving the kernel struct offsets the programs need from the running
//! kernel's BTF.

use std::path::Path;

use agent_common::{KernelOffsets, offsets::MISSING};

use crate::btf::{self, Btf};

/// Location of the running kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("reading kernel BTF from {path}: {source}")]
    Btf {
        path: String,
        #[source]
        source: btf::BtfError,
    },
}

/// Resolved offsets plus the fields that could not be resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub offsets: KernelOffsets,
    /// `(field, btf path, reason)` for each unresolved field.
    pub missing: Vec<(String, String, String)>,
}

impl Resolved {
    pub fn is_missing(&self, field: &str) -> bool {
        self.offsets.get(field).is_none_or(|v| v == MISSING)
    }
}

/// Reads BTF from `path` and resolves every field of [`KernelOffsets`].
pub fn resolve(path: &Path) -> Result<Resolved, OffsetsError> {
    let btf = Btf::from_file(path).map_err(|source| OffsetsError::Btf {
        path: path.display().to_string(),
        source,
    })?;
    Ok(resolve_from(&btf))
}

pub fn resolve_from(btf: &Btf) -> Resolved {
    let (offsets, errors) = btf::resolve_kernel_offsets(btf);
    let missing = errors
        .into_iter()
        .map(|e| (e.field.to_string(), e.path.to_string(), e.to_string()))
        .collect();
    Resolved { offsets, missing }
}
