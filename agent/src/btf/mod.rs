//! A small reader for the kernel's BTF (BPF Type Format) type information.
//!
//! rustc emits no CO-RE relocations for eBPF, so the agent resolves the byte
//! offsets of the kernel struct fields its programs read from the running
//! kernel's BTF (`/sys/kernel/btf/vmlinux`) and hands them to the programs as
//! globals (see [`resolve_kernel_offsets`]). This reader is our own (instead
//! of `btf-rs`, which is LGPL) and does only that job: it parses the type
//! section, indexes named types, and answers member-offset and size queries.
//! Every read is bounds-checked: a hostile or truncated blob gives a
//! [`BtfError`], never a panic.

#[cfg(test)]
mod builder;
mod offsets;
mod parse;
#[cfg(test)]
mod tests;

use std::{collections::HashMap, path::Path};

pub use offsets::{OffsetError, resolve_kernel_offsets};
pub use parse::Endian;
use parse::{Kind, Member, Type};

/// How deep typedef chains and anonymous-member nesting are followed: far
/// beyond any real kernel (which nests a few levels), small enough that a
/// cyclic hostile blob terminates quickly.
const MAX_DEPTH: usize = 32;

/// Errors of BTF parsing and lookups.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading BTF file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BTF {what} is truncated at byte {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("not a BTF blob: magic {0:#06x} (expected 0xeb9f)")]
    BadMagic(u16),
    #[error(
        "BTF blob is {blob:?}-endian but this machine is {:?}-endian; it describes another machine's kernel",
        Endian::NATIVE
    )]
    ForeignEndian { blob: Endian },
    #[error("unsupported BTF version {0} (only version 1 is known)")]
    UnsupportedVersion(u8),
    #[error("bad BTF header: {0}")]
    BadHeader(String),
    #[error("BTF type {type_id} has a name offset {offset} outside the string section")]
    BadString { offset: u32, type_id: u32 },
    #[error(
        "BTF type {type_id} has unknown kind {kind}; the rest of the type section cannot be decoded"
    )]
    UnknownKind { type_id: u32, kind: u8 },
    #[error("BTF type id {0} does not exist")]
    BadTypeId(u32),
    #[error("invalid BTF lookup path {0:?} (expected \"struct.member[.member...]\")")]
    InvalidPath(String),
    #[error("no struct or union named {0:?} in BTF")]
    TypeNotFound(String),
    #[error("{0:?} is only a forward declaration in BTF (no layout)")]
    Incomplete(String),
    #[error("{container} has no member {member:?}")]
    MemberNotFound { container: String, member: String },
    #[error("{container}.{member} is a bitfield; it has no byte offset")]
    Bitfield { container: String, member: String },
    #[error(
        "{container}.{member} is not a struct or union, so {next:?} cannot be looked up inside it"
    )]
    NotComposite {
        container: String,
        member: String,
        next: String,
    },
    #[error("size of BTF type {0} is unknown (function, void or forward declaration)")]
    NoSize(u32),
    #[error("size of BTF type {0} overflows")]
    SizeOverflow(u32),
    #[error("BTF type chain deeper than {MAX_DEPTH} at type {0} (cycle?)")]
    TooDeep(u32),
}

/// Parsed BTF: the types, the string section and an index of named types.
#[derive(Debug)]
pub struct Btf {
    endian: Endian,
    types: Vec<Type>,
    strings: Vec<u8>,
    /// Name -> ids of named structs, unions, forward declarations, typedefs,
    /// ints, enums and floats (the kinds a lookup can start from).
    by_name: HashMap<String, Vec<u32>>,
}

impl Btf {
    /// Parses a blob in this machine's byte order. A blob of the other byte
    /// order is rejected with [`BtfError::ForeignEndian`].
    pub fn from_bytes(data: &[u8]) -> Result<Self, BtfError> {
        Self::build(parse::parse(data, false)?)
    }

    /// Parses a blob of either byte order (offline inspection of another
    /// machine's BTF).
    pub fn from_bytes_any_endian(data: &[u8]) -> Result<Self, BtfError> {
        Self::build(parse::parse(data, true)?)
    }

    /// Reads and parses a BTF file such as `/sys/kernel/btf/vmlinux`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BtfError> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&data)
    }

    fn build(p: parse::Parsed) -> Result<Self, BtfError> {
        let mut btf = Btf {
            endian: p.endian,
            types: p.types,
            strings: p.strings,
            by_name: HashMap::new(),
        };
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, t) in btf.types.iter().enumerate() {
            let indexed = matches!(
                t.kind,
                Kind::Struct { .. }
                    | Kind::Union { .. }
                    | Kind::Fwd
                    | Kind::Typedef { .. }
                    | Kind::Int { .. }
                    | Kind::Enum { .. }
                    | Kind::Enum64 { .. }
                    | Kind::Float { .. }
            );
            if !indexed || t.name_off == 0 {
                continue;
            }
            let name = btf.str_at(t.name_off, id as u32)?;
            by_name.entry(name.to_owned()).or_default().push(id as u32);
        }
        btf.by_name = by_name;
        Ok(btf)
    }

    /// Byte order of the parsed blob.
    pub fn endian(&self) -> Endian {
        self.endian
    }

    /// Number of types, not counting the implicit `void` (id 0).
    pub fn type_count(&self) -> usize {
        self.types.len() - 1
    }

    /// Byte offset of a member: `"task_struct.real_parent"`, or a nested
    /// path `"a.b.c"` where `b` is a struct/union member (through typedefs
    /// and qualifiers). Members of anonymous struct/union members are found
    /// as if they were direct members, like C does. Bitfields are an error.
    pub fn member_offset(&self, path: &str) -> Result<u32, BtfError> {
        let mut parts = path.split('.');
        let root = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        if root.is_empty() || rest.is_empty() || rest.iter().any(|p| p.is_empty()) {
            return Err(BtfError::InvalidPath(path.to_owned()));
        }
        let mut container_id = self.find_composite(root)?;
        let mut container_name = root.to_owned();
        let mut total_bits: u64 = 0;
        for (i, member) in rest.iter().enumerate() {
            let (bits, m) = self.find_member(container_id, member, 0)?.ok_or_else(|| {
                BtfError::MemberNotFound {
                    container: container_name.clone(),
                    member: (*member).to_owned(),
                }
            })?;
            if m.bitfield_size != 0 || !bits.is_multiple_of(8) || self.is_int_bitfield(m.type_id)? {
                return Err(BtfError::Bitfield {
                    container: container_name,
                    member: (*member).to_owned(),
                });
            }
            total_bits += u64::from(bits);
            if let Some(next) = rest.get(i + 1) {
                let target = self.skip_aliases(m.type_id)?;
                if !matches!(
                    self.ty(target)?.kind,
                    Kind::Struct { .. } | Kind::Union { .. }
                ) {
                    return Err(BtfError::NotComposite {
                        container: container_name,
                        member: (*member).to_owned(),
                        next: (*next).to_owned(),
                    });
                }
                container_id = target;
                container_name = format!("{container_name}.{member}");
            }
        }
        u32::try_from(total_bits / 8).map_err(|_| BtfError::SizeOverflow(container_id))
    }

    /// Size in bytes of a named struct, union, typedef, int, enum or float
    /// (`"upid"` -> 16). Structs and unions win over typedefs of the same
    /// name; forward declarations are skipped.
    pub fn type_size(&self, name: &str) -> Result<u32, BtfError> {
        let ids = self
            .by_name
            .get(name)
            .ok_or_else(|| BtfError::TypeNotFound(name.to_owned()))?;
        if let Ok(id) = self.find_composite(name) {
            return self.size_of(id);
        }
        let id = ids
            .iter()
            .copied()
            .find(|&id| {
                self.types
                    .get(id as usize)
                    .is_some_and(|t| !matches!(t.kind, Kind::Fwd))
            })
            .ok_or_else(|| BtfError::Incomplete(name.to_owned()))?;
        self.size_of(id)
    }

    fn ty(&self, id: u32) -> Result<&Type, BtfError> {
        self.types.get(id as usize).ok_or(BtfError::BadTypeId(id))
    }

    /// The NUL-terminated string at `off` in the string section.
    fn str_at(&self, off: u32, type_id: u32) -> Result<&str, BtfError> {
        let bad = || BtfError::BadString {
            offset: off,
            type_id,
        };
        let tail = self.strings.get(off as usize..).ok_or_else(bad)?;
        let end = tail.iter().position(|&b| b == 0).ok_or_else(bad)?;
        std::str::from_utf8(&tail[..end]).map_err(|_| bad())
    }

    /// The struct or union named `name`, preferring one with members when
    /// several share the name (BTF may hold empty definitions and FWDs).
    fn find_composite(&self, name: &str) -> Result<u32, BtfError> {
        let ids = self
            .by_name
            .get(name)
            .ok_or_else(|| BtfError::TypeNotFound(name.to_owned()))?;
        let mut fallback = None;
        let mut typedef = None;
        let mut saw_fwd = false;
        for &id in ids {
            match &self.ty(id)?.kind {
                Kind::Struct { members, .. } | Kind::Union { members, .. } => {
                    if !members.is_empty() {
                        return Ok(id);
                    }
                    fallback.get_or_insert(id);
                }
                Kind::Fwd => saw_fwd = true,
                Kind::Typedef { .. } => {
                    typedef.get_or_insert(id);
                }
                _ => {}
            }
        }
        if let Some(id) = fallback {
            return Ok(id);
        }
        // `typedef struct { ... } atomic_t;`: a typedef of an anonymous
        // composite names it just as well.
        if let Some(td) = typedef {
            let target = self.skip_aliases(td)?;
            if matches!(
                self.ty(target)?.kind,
                Kind::Struct { .. } | Kind::Union { .. }
            ) {
                return Ok(target);
            }
        }
        if saw_fwd {
            Err(BtfError::Incomplete(name.to_owned()))
        } else {
            Err(BtfError::TypeNotFound(name.to_owned()))
        }
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn skip_aliases(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_DEPTH {
            match self.ty(id)?.kind {
                Kind::Typedef { target }
                | Kind::Volatile { target }
                | Kind::Const { target }
                | Kind::Restrict { target }
                | Kind::TypeTag { target } => id = target,
                _ => return Ok(id),
            }
        }
        Err(BtfError::TooDeep(id))
    }

    /// An INT member whose encoding says it is narrower than its storage or
    /// shifted inside it: the pre-kind_flag way of encoding bitfields.
    fn is_int_bitfield(&self, type_id: u32) -> Result<bool, BtfError> {
        let id = self.skip_aliases(type_id)?;
        Ok(match self.ty(id)?.kind {
            Kind::Int {
                size,
                bits,
                bit_offset,
            } => u64::from(bits) != u64::from(size) * 8 || bit_offset != 0,
            _ => false,
        })
    }

    /// Finds `name` among the members of the struct/union `id`, descending
    /// into anonymous struct/union members. Returns the member's bit offset
    /// from the start of `id`.
    fn find_member(
        &self,
        id: u32,
        name: &str,
        depth: usize,
    ) -> Result<Option<(u32, Member)>, BtfError> {
        if depth >= MAX_DEPTH {
            return Err(BtfError::TooDeep(id));
        }
        let members = match &self.ty(id)?.kind {
            Kind::Struct { members, .. } | Kind::Union { members, .. } => members,
            _ => return Ok(None),
        };
        for m in members {
            if m.name_off != 0 {
                if self.str_at(m.name_off, id)? == name {
                    return Ok(Some((m.bit_offset, *m)));
                }
                continue;
            }
            let inner = self.skip_aliases(m.type_id)?;
            if let Some((bits, found)) = self.find_member(inner, name, depth + 1)? {
                let total = m
                    .bit_offset
                    .checked_add(bits)
                    .ok_or(BtfError::SizeOverflow(id))?;
                return Ok(Some((total, found)));
            }
        }
        Ok(None)
    }

    /// Size in bytes of type `id`.
    fn size_of(&self, id: u32) -> Result<u32, BtfError> {
        let mut id = id;
        let mut multiplier: u64 = 1;
        for _ in 0..MAX_DEPTH {
            let base = match self.ty(id)?.kind {
                Kind::Int { size, .. }
                | Kind::Struct { size, .. }
                | Kind::Union { size, .. }
                | Kind::Enum { size }
                | Kind::Enum64 { size }
                | Kind::Float { size } => u64::from(size),
                // BTF does not record the pointer width; the kernel's is the
                // agent's (same machine).
                Kind::Ptr { .. } => std::mem::size_of::<usize>() as u64,
                Kind::Typedef { target }
                | Kind::Volatile { target }
                | Kind::Const { target }
                | Kind::Restrict { target }
                | Kind::TypeTag { target } => {
                    id = target;
                    continue;
                }
                Kind::Array { elem, nelems } => {
                    multiplier = multiplier
                        .checked_mul(u64::from(nelems))
                        .ok_or(BtfError::SizeOverflow(id))?;
                    id = elem;
                    continue;
                }
                Kind::Void | Kind::Fwd | Kind::Other => return Err(BtfError::NoSize(id)),
            };
            return base
                .checked_mul(multiplier)
                .and_then(|s| u32::try_from(s).ok())
                .ok_or(BtfError::SizeOverflow(id));
        }
        Err(BtfError::TooDeep(id))
    }
}
