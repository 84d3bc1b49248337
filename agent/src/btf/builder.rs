//! A tiny BTF blob writer for unit tests: builds blobs with exactly the
//! shapes the reader must handle (anonymous unions, typedef chains,
//! bitfields, forward declarations, every kind's trailing data).

use super::parse::{Endian, HEADER_LEN, MAGIC, kind};

pub(super) struct Builder {
    endian: Endian,
    strings: Vec<u8>,
    types: Vec<u8>,
    next_id: u32,
}

/// A member: name, type id, bit offset, bitfield size (0 = not a bitfield).
pub(super) type M<'a> = (&'a str, u32, u32, u32);

impl Builder {
    pub fn new() -> Self {
        Self::with_endian(Endian::NATIVE)
    }

    pub fn with_endian(endian: Endian) -> Self {
        Self {
            endian,
            strings: vec![0],
            types: Vec::new(),
            next_id: 1,
        }
    }

    fn w(&mut self, v: u32) {
        let b = match self.endian {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        };
        self.types.extend_from_slice(&b);
    }

    pub fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn head(&mut self, name: &str, k: u8, vlen: u32, kflag: bool, size_or_type: u32) -> u32 {
        let n = self.str(name);
        self.w(n);
        self.w((u32::from(kflag) << 31) | (u32::from(k) << 24) | (vlen & 0xffff));
        self.w(size_or_type);
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn int(&mut self, name: &str, size: u32) -> u32 {
        self.int_enc(name, size, size * 8, 0)
    }

    pub fn int_enc(&mut self, name: &str, size: u32, bits: u32, bit_off: u32) -> u32 {
        let id = self.head(name, kind::INT, 0, false, size);
        self.w((bit_off << 16) | bits);
        id
    }

    pub fn ptr(&mut self, target: u32) -> u32 {
        self.head("", kind::PTR, 0, false, target)
    }

    pub fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
        let id = self.head("", kind::ARRAY, 0, false, 0);
        self.w(elem);
        self.w(index);
        self.w(n);
        id
    }

    fn composite(&mut self, k: u8, name: &str, size: u32, members: &[M<'_>]) -> u32 {
        let kflag = members.iter().any(|m| m.3 != 0);
        let id = self.head(name, k, members.len() as u32, kflag, size);
        for &(mname, ty, bit_off, bits) in members {
            let n = self.str(mname);
            self.w(n);
            self.w(ty);
            self.w(if kflag {
                (bits << 24) | bit_off
            } else {
                bit_off
            });
        }
        id
    }

    pub fn struct_(&mut self, name: &str, size: u32, members: &[M<'_>]) -> u32 {
        self.composite(kind::STRUCT, name, size, members)
    }

    pub fn union_(&mut self, name: &str, size: u32, members: &[M<'_>]) -> u32 {
        self.composite(kind::UNION, name, size, members)
    }

    pub fn enum_(&mut self, name: &str, values: &[(&str, i32)]) -> u32 {
        let id = self.head(name, kind::ENUM, values.len() as u32, false, 4);
        for &(n, v) in values {
            let n = self.str(n);
            self.w(n);
            self.w(v as u32);
        }
        id
    }

    pub fn enum64(&mut self, name: &str, values: &[(&str, u64)]) -> u32 {
        let id = self.head(name, kind::ENUM64, values.len() as u32, false, 8);
        for &(n, v) in values {
            let n = self.str(n);
            self.w(n);
            self.w(v as u32);
            self.w((v >> 32) as u32);
        }
        id
    }

    pub fn fwd(&mut self, name: &str, union: bool) -> u32 {
        self.head(name, kind::FWD, 0, union, 0)
    }

    pub fn typedef(&mut self, name: &str, target: u32) -> u32 {
        self.head(name, kind::TYPEDEF, 0, false, target)
    }

    pub fn volatile(&mut self, target: u32) -> u32 {
        self.head("", kind::VOLATILE, 0, false, target)
    }

    pub fn const_(&mut self, target: u32) -> u32 {
        self.head("", kind::CONST, 0, false, target)
    }

    pub fn restrict(&mut self, target: u32) -> u32 {
        self.head("", kind::RESTRICT, 0, false, target)
    }

    pub fn type_tag(&mut self, name: &str, target: u32) -> u32 {
        self.head(name, kind::TYPE_TAG, 0, false, target)
    }

    pub fn func_proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
        let id = self.head("", kind::FUNC_PROTO, params.len() as u32, false, ret);
        for &(n, t) in params {
            let n = self.str(n);
            self.w(n);
            self.w(t);
        }
        id
    }

    pub fn func(&mut self, name: &str, proto: u32) -> u32 {
        self.head(name, kind::FUNC, 0, false, proto)
    }

    pub fn var(&mut self, name: &str, ty: u32) -> u32 {
        let id = self.head(name, kind::VAR, 0, false, ty);
        self.w(1);
        id
    }

    pub fn datasec(&mut self, name: &str, entries: &[(u32, u32, u32)]) -> u32 {
        let size = entries.iter().map(|e| e.1 + e.2).max().unwrap_or(0);
        let id = self.head(name, kind::DATASEC, entries.len() as u32, false, size);
        for &(t, off, sz) in entries {
            self.w(t);
            self.w(off);
            self.w(sz);
        }
        id
    }

    pub fn float(&mut self, name: &str, size: u32) -> u32 {
        self.head(name, kind::FLOAT, 0, false, size)
    }

    pub fn decl_tag(&mut self, name: &str, target: u32, component: i32) -> u32 {
        let id = self.head(name, kind::DECL_TAG, 0, false, target);
        self.w(component as u32);
        id
    }

    /// A type header with an arbitrary kind number (for error tests).
    pub fn raw_kind(&mut self, name: &str, k: u8) -> u32 {
        self.head(name, k, 0, false, 0)
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let w16 = |v: u16| match self.endian {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        };
        let w32 = |v: u32| match self.endian {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        };
        out.extend_from_slice(&w16(MAGIC));
        out.push(1); // version
        out.push(0); // flags
        out.extend_from_slice(&w32(HEADER_LEN as u32));
        out.extend_from_slice(&w32(0)); // type_off
        out.extend_from_slice(&w32(self.types.len() as u32));
        out.extend_from_slice(&w32(self.types.len() as u32)); // str_off
        out.extend_from_slice(&w32(self.strings.len() as u32));
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}
