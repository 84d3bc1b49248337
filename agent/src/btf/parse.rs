//! Decoding of the raw BTF blob: header, string section and type section.
//!
//! The format is the one of Linux `Documentation/bpf/btf.rst`. Every read is
//! bounds-checked; a malformed blob yields a [`BtfError`], never a panic,
//! because the blob may come from an untrusted file (`--btf` path, a
//! container image) as well as from the running kernel.

use super::BtfError;

/// `BTF_MAGIC` as stored in a blob of the reader's byte order.
pub(super) const MAGIC: u16 = 0xEB9F;
/// Size of `struct btf_header` (version 1).
pub(super) const HEADER_LEN: usize = 24;

/// BTF kind numbers (`BTF_KIND_*`).
pub(super) mod kind {
    pub const INT: u8 = 1;
    pub const PTR: u8 = 2;
    pub const ARRAY: u8 = 3;
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const ENUM: u8 = 6;
    pub const FWD: u8 = 7;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    pub const FUNC: u8 = 12;
    pub const FUNC_PROTO: u8 = 13;
    pub const VAR: u8 = 14;
    pub const DATASEC: u8 = 15;
    pub const FLOAT: u8 = 16;
    pub const DECL_TAG: u8 = 17;
    pub const TYPE_TAG: u8 = 18;
    pub const ENUM64: u8 = 19;
}

/// A struct or union member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Member {
    /// Offset of the name in the string section (0 = anonymous).
    pub name_off: u32,
    pub type_id: u32,
    /// Offset from the start of the enclosing type, in bits.
    pub bit_offset: u32,
    /// Width of a bitfield (only encoded when the parent's kind_flag is set;
    /// 0 otherwise).
    pub bitfield_size: u32,
}

/// What the resolver needs to know about each type. Kinds whose trailing
/// data is irrelevant for offsets (enum values, function parameters, datasec
/// entries) are validated and skipped rather than stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Type id 0.
    Void,
    Int {
        size: u32,
        bits: u32,
        bit_offset: u32,
    },
    Ptr {
        target: u32,
    },
    Array {
        elem: u32,
        nelems: u32,
    },
    Struct {
        size: u32,
        members: Vec<Member>,
    },
    Union {
        size: u32,
        members: Vec<Member>,
    },
    Enum {
        size: u32,
    },
    Enum64 {
        size: u32,
    },
    Fwd,
    Typedef {
        target: u32,
    },
    Volatile {
        target: u32,
    },
    Const {
        target: u32,
    },
    Restrict {
        target: u32,
    },
    TypeTag {
        target: u32,
    },
    Float {
        size: u32,
    },
    /// FUNC, FUNC_PROTO, VAR, DATASEC, DECL_TAG: never part of a layout.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Type {
    pub name_off: u32,
    pub kind: Kind,
}

/// Byte order of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
    /// The byte order of the machine running the agent (the kernel's BTF
    /// always has it).
    pub const NATIVE: Endian = if cfg!(target_endian = "big") {
        Endian::Big
    } else {
        Endian::Little
    };
}

/// A bounds-checked cursor over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    endian: Endian,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32, BtfError> {
        let end = self.pos.checked_add(4).ok_or(BtfError::Truncated {
            what: self.what,
            offset: self.pos,
        })?;
        let bytes: [u8; 4] = self
            .buf
            .get(self.pos..end)
            .and_then(|s| s.try_into().ok())
            .ok_or(BtfError::Truncated {
                what: self.what,
                offset: self.pos,
            })?;
        self.pos = end;
        Ok(match self.endian {
            Endian::Little => u32::from_le_bytes(bytes),
            Endian::Big => u32::from_be_bytes(bytes),
        })
    }

    fn skip(&mut self, n: usize) -> Result<(), BtfError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(BtfError::Truncated {
                what: self.what,
                offset: self.pos,
            })?;
        self.pos = end;
        Ok(())
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// The decoded sections of a blob.
pub(super) struct Parsed {
    pub endian: Endian,
    pub types: Vec<Type>,
    pub strings: Vec<u8>,
}

/// Detects the byte order from the magic.
pub(super) fn detect_endian(data: &[u8]) -> Result<Endian, BtfError> {
    let m = data.get(0..2).ok_or(BtfError::Truncated {
        what: "header",
        offset: 0,
    })?;
    let le = u16::from_le_bytes([m[0], m[1]]);
    if le == MAGIC {
        Ok(Endian::Little)
    } else if u16::from_be_bytes([m[0], m[1]]) == MAGIC {
        Ok(Endian::Big)
    } else {
        Err(BtfError::BadMagic(le))
    }
}

/// Parses a whole blob. `allow_foreign` accepts a blob whose byte order
/// differs from the agent's (useful for offline inspection); offsets of a
/// foreign kernel are never handed to programs of this one.
pub(super) fn parse(data: &[u8], allow_foreign: bool) -> Result<Parsed, BtfError> {
    let endian = detect_endian(data)?;
    if endian != Endian::NATIVE && !allow_foreign {
        return Err(BtfError::ForeignEndian { blob: endian });
    }
    let mut r = Reader {
        buf: data,
        pos: 2,
        endian,
        what: "header",
    };
    let b = data.get(2..4).ok_or(BtfError::Truncated {
        what: "header",
        offset: 2,
    })?;
    let (version, _flags) = (b[0], b[1]);
    if version != 1 {
        return Err(BtfError::UnsupportedVersion(version));
    }
    r.pos = 4;
    let hdr_len = r.u32()? as usize;
    let type_off = r.u32()? as usize;
    let type_len = r.u32()? as usize;
    let str_off = r.u32()? as usize;
    let str_len = r.u32()? as usize;
    if hdr_len < HEADER_LEN {
        return Err(BtfError::BadHeader(format!(
            "hdr_len {hdr_len} is smaller than {HEADER_LEN}"
        )));
    }
    if hdr_len > data.len() {
        return Err(BtfError::Truncated {
            what: "header",
            offset: hdr_len,
        });
    }
    let body = &data[hdr_len..];
    let section = |off: usize, len: usize, what: &'static str| -> Result<&[u8], BtfError> {
        off.checked_add(len)
            .and_then(|end| body.get(off..end))
            .ok_or(BtfError::Truncated {
                what,
                offset: hdr_len.saturating_add(off),
            })
    };
    let type_sec = section(type_off, type_len, "type section")?;
    let str_sec = section(str_off, str_len, "string section")?;
    if !type_off.is_multiple_of(4) {
        return Err(BtfError::BadHeader(format!(
            "type_off {type_off} is not 4-byte aligned"
        )));
    }
    if let Some(&first) = str_sec.first()
        && first != 0
    {
        return Err(BtfError::BadHeader(
            "string section does not start with an empty string".into(),
        ));
    }
    let types = parse_types(type_sec, endian, str_sec.len())?;
    Ok(Parsed {
        endian,
        types,
        strings: str_sec.to_vec(),
    })
}

fn check_name(name_off: u32, str_len: usize, id: usize) -> Result<(), BtfError> {
    if name_off as usize >= str_len && name_off != 0 {
        return Err(BtfError::BadString {
            offset: name_off,
            type_id: id as u32,
        });
    }
    Ok(())
}

fn parse_types(sec: &[u8], endian: Endian, str_len: usize) -> Result<Vec<Type>, BtfError> {
    let mut r = Reader {
        buf: sec,
        pos: 0,
        endian,
        what: "type section",
    };
    // Every type takes at least 12 bytes, which bounds the allocation by the
    // input size.
    let mut types = Vec::with_capacity(sec.len() / 12 + 1);
    types.push(Type {
        name_off: 0,
        kind: Kind::Void,
    });
    while !r.at_end() {
        let id = types.len();
        let name_off = r.u32()?;
        let info = r.u32()?;
        let size_or_type = r.u32()?;
        check_name(name_off, str_len, id)?;
        let vlen = (info & 0xffff) as usize;
        let k = ((info >> 24) & 0x1f) as u8;
        let kind_flag = info >> 31 == 1;
        let kind = match k {
            kind::INT => {
                let enc = r.u32()?;
                Kind::Int {
                    size: size_or_type,
                    bits: enc & 0xff,
                    bit_offset: (enc >> 16) & 0xff,
                }
            }
            kind::PTR => Kind::Ptr {
                target: size_or_type,
            },
            kind::ARRAY => {
                let elem = r.u32()?;
                let _index = r.u32()?;
                let nelems = r.u32()?;
                Kind::Array { elem, nelems }
            }
            kind::STRUCT | kind::UNION => {
                // Bound the allocation by what is left in the section.
                let left = sec.len().saturating_sub(r.pos) / 12;
                let mut members = Vec::with_capacity(vlen.min(left));
                for _ in 0..vlen {
                    let m_name = r.u32()?;
                    let m_type = r.u32()?;
                    let off = r.u32()?;
                    check_name(m_name, str_len, id)?;
                    let (bit_offset, bitfield_size) = if kind_flag {
                        (off & 0x00ff_ffff, off >> 24)
                    } else {
                        (off, 0)
                    };
                    members.push(Member {
                        name_off: m_name,
                        type_id: m_type,
                        bit_offset,
                        bitfield_size,
                    });
                }
                if k == kind::STRUCT {
                    Kind::Struct {
                        size: size_or_type,
                        members,
                    }
                } else {
                    Kind::Union {
                        size: size_or_type,
                        members,
                    }
                }
            }
            kind::ENUM => {
                r.skip(vlen.saturating_mul(8))?;
                Kind::Enum { size: size_or_type }
            }
            kind::ENUM64 => {
                r.skip(vlen.saturating_mul(12))?;
                Kind::Enum64 { size: size_or_type }
            }
            kind::FWD => Kind::Fwd,
            kind::TYPEDEF => Kind::Typedef {
                target: size_or_type,
            },
            kind::VOLATILE => Kind::Volatile {
                target: size_or_type,
            },
            kind::CONST => Kind::Const {
                target: size_or_type,
            },
            kind::RESTRICT => Kind::Restrict {
                target: size_or_type,
            },
            kind::TYPE_TAG => Kind::TypeTag {
                target: size_or_type,
            },
            kind::FLOAT => Kind::Float { size: size_or_type },
            kind::FUNC => Kind::Other,
            kind::FUNC_PROTO => {
                r.skip(vlen.saturating_mul(8))?;
                Kind::Other
            }
            kind::VAR => {
                r.skip(4)?;
                Kind::Other
            }
            kind::DATASEC => {
                r.skip(vlen.saturating_mul(12))?;
                Kind::Other
            }
            kind::DECL_TAG => {
                r.skip(4)?;
                Kind::Other
            }
            other => {
                // UNKN (0) and anything newer than this reader: the trailing
                // size is unknown, so the rest of the section cannot be
                // decoded.
                return Err(BtfError::UnknownKind {
                    type_id: id as u32,
                    kind: other,
                });
            }
        };
        types.push(Type { name_off, kind });
    }
    Ok(types)
}
