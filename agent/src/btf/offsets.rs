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
        let value = resolve_path(btf, path);
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

/// One `FIELDS` path: a type size (`sizeof:T`), or member paths separated
/// by `|` tried in order (a member renamed across kernel versions); the
/// error is the last alternative's.
fn resolve_path(btf: &Btf, path: &str) -> Result<u32, BtfError> {
    if let Some(ty) = path.strip_prefix(SIZEOF_PREFIX) {
        return btf.type_size(ty);
    }
    let mut last = Err(BtfError::InvalidPath(path.to_owned()));
    for alt in path.split('|') {
        last = btf.member_offset(alt);
        if last.is_ok() {
            break;
        }
    }
    last
}
