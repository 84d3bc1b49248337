//! Resolving every field of [`KernelOffsets`] against a parsed [`Btf`].

use agent_common::KernelOffsets;

use super::{Btf, BtfError};

/// Prefix of a [`KernelOffsets::FIELDS`] path that asks for a type's size
/// instead of a member offset (`"sizeof:upid"`).
const SIZEOF_PREFIX: &str = "sizeof:";

/// A kernel field that could not be resolved (it stays
/// [`agent_common::offsets::MISSING`]).
#[derive(Debug, thiserror::Error)]
#[error("kernel field {field} ({path}): {source}")]
pub struct OffsetError {
    /// Field name in [`KernelOffsets`] (`task_loginuid`).
    pub field: &'static str,
    /// The BTF path it was resolved from (`task_struct.loginuid`).
    pub path: &'static str,
    #[source]
    pub source: BtfError,
}

/// Resolves each `(field, path)` of [`KernelOffsets::FIELDS`]. Fields that
/// fail stay `MISSING` and are reported, so the caller can disable only what
/// needs them instead of refusing to start.
pub fn resolve_kernel_offsets(btf: &Btf) -> (KernelOffsets, Vec<OffsetError>) {
    let mut offsets = KernelOffsets::missing();
    let mut errors = Vec::new();
    for &(field, path) in KernelOffsets::FIELDS {
        let value = match path.strip_prefix(SIZEOF_PREFIX) {
            Some(ty) => btf.type_size(ty),
            None => btf.member_offset(path),
        };
        match value {
            Ok(v) => {
                if let Some(slot) = offsets.get_mut(field) {
                    *slot = v;
                }
            }
            Err(source) => errors.push(OffsetError {
                field,
                path,
                source,
            }),
        }
    }
    (offsets, errors)
}
