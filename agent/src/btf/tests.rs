use agent_common::{KernelOffsets, offsets::MISSING};

use super::{
    Btf, BtfError,
    builder::Builder,
    parse::{Endian, kind},
    resolve_kernel_offsets,
};

/// A blob with the shapes real kernels use.
fn sample(endian: Endian) -> Vec<u8> {
    let mut b = Builder::with_endian(endian);
    let int = b.int("int", 4); // 1
    let uint = b.int("unsigned int", 4);
    let u64_ = b.int("long long unsigned int", 8);
    let uchar = b.int("unsigned char", 1);
    let u32_ = b.typedef("u32", uint);
    let kpid = b.typedef("__kernel_pid_t", int);
    let pid_t = b.typedef("pid_t", kpid);
    // A forward declaration and an empty definition before the real one.
    b.fwd("task_struct", false);
    b.struct_("task_struct", 0, &[]);
    let task_fwd = b.fwd("task_struct", false);
    let task_ptr = b.ptr(task_fwd);
    b.struct_(
        "task_struct",
        64,
        &[
            ("state", uint, 0, 0),
            ("pid", pid_t, 32, 0),
            ("tgid", pid_t, 64, 0),
            ("real_parent", task_ptr, 128, 0),
            ("flags", uint, 192, 3),
            ("more", uint, 195, 5),
            ("loginuid", u32_, 224, 0),
        ],
    );
    // struct qstr { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const unsigned char *name; }
    let hl = b.struct_("", 8, &[("hash", u32_, 0, 0), ("len", u32_, 32, 0)]);
    let un = b.union_("", 8, &[("", hl, 0, 0), ("hash_len", u64_, 0, 0)]);
    let cuchar = b.const_(uchar);
    let name_ptr = b.ptr(cuchar);
    b.struct_("qstr", 16, &[("", un, 0, 0), ("name", name_ptr, 64, 0)]);
    // struct path { void *mnt; void *dentry; }; struct file { u32 f_flags; struct path f_path; }
    let void_ptr = b.ptr(0);
    let path = b.struct_(
        "path",
        16,
        &[("mnt", void_ptr, 0, 0), ("dentry", void_ptr, 64, 0)],
    );
    // Member typed through const -> typedef -> volatile -> struct.
    let vpath = b.volatile(path);
    let path_t = b.typedef("path_t", vpath);
    let cpath = b.const_(path_t);
    b.struct_(
        "file",
        24,
        &[("f_flags", uint, 0, 0), ("f_path", cpath, 64, 0)],
    );
    // mm_struct: FWD first, the field inside an anonymous struct at 8 bytes.
    b.fwd("mm_struct", false);
    let anon = b.struct_(
        "",
        16,
        &[("start", u64_, 0, 0), ("exe_file", void_ptr, 64, 0)],
    );
    b.struct_("mm_struct", 32, &[("pad", u64_, 0, 0), ("", anon, 64, 0)]);
    // struct upid { int nr; void *ns; }
    b.struct_("upid", 16, &[("nr", int, 0, 0), ("ns", void_ptr, 64, 0)]);
    // typedef struct { int counter; } atomic_t;
    let at = b.struct_("", 4, &[("counter", int, 0, 0)]);
    b.typedef("atomic_t", at);
    // Pre-kind_flag bitfield: an INT narrower than its storage.
    let narrow = b.int_enc("unsigned int", 4, 3, 0);
    b.struct_("oldbits", 4, &[("a", narrow, 0, 0), ("b", uint, 0, 0)]);
    // Unaligned member without kind_flag.
    b.struct_("unaligned", 8, &[("x", uchar, 4, 0)]);
    // typedef unsigned char mac_t[6];
    let arr = b.array(uchar, int, 6);
    b.typedef("mac_t", arr);
    // Every other kind, to exercise the trailing-data sizes.
    b.enum_("pid_type", &[("PIDTYPE_PID", 0), ("PIDTYPE_TGID", 1)]);
    b.enum64("big", &[("BIG", 1 << 40)]);
    let proto = b.func_proto(int, &[("a", int), ("b", void_ptr)]);
    b.func("do_it", proto);
    let v = b.var("some_var", int);
    b.datasec(".data", &[(v, 0, 4)]);
    b.float("double", 8);
    b.decl_tag("tag", proto, -1);
    b.type_tag("user", int);
    b.restrict(void_ptr);
    // Only a forward declaration.
    b.fwd("only_fwd", true);
    b.build()
}

fn sample_btf() -> Btf {
    match Btf::from_bytes(&sample(Endian::NATIVE)) {
        Ok(b) => b,
        Err(e) => panic!("sample blob must parse: {e}"),
    }
}

#[test]
fn member_offsets_of_every_shape() {
    let btf = sample_btf();
    let off = |p: &str| btf.member_offset(p).map_err(|e| e.to_string());
    assert_eq!(off("task_struct.pid"), Ok(4));
    assert_eq!(off("task_struct.tgid"), Ok(8));
    assert_eq!(off("task_struct.real_parent"), Ok(16));
    assert_eq!(off("task_struct.loginuid"), Ok(28));
    assert_eq!(off("qstr.len"), Ok(4));
    assert_eq!(off("qstr.hash"), Ok(0));
    assert_eq!(off("qstr.hash_len"), Ok(0));
    assert_eq!(off("qstr.name"), Ok(8));
    assert_eq!(off("path.dentry"), Ok(8));
    assert_eq!(off("file.f_path"), Ok(8));
    assert_eq!(off("file.f_path.dentry"), Ok(16));
    assert_eq!(off("mm_struct.exe_file"), Ok(16));
    assert_eq!(off("atomic_t.counter"), Ok(0));
    assert_eq!(off("upid.ns"), Ok(8));
}

#[test]
fn type_sizes() {
    let btf = sample_btf();
    assert_eq!(btf.type_size("upid").ok(), Some(16));
    assert_eq!(btf.type_size("qstr").ok(), Some(16));
    assert_eq!(btf.type_size("task_struct").ok(), Some(64));
    assert_eq!(btf.type_size("pid_t").ok(), Some(4));
    assert_eq!(btf.type_size("atomic_t").ok(), Some(4));
    assert_eq!(btf.type_size("mac_t").ok(), Some(6));
    assert_eq!(btf.type_size("pid_type").ok(), Some(4));
    assert_eq!(btf.type_size("big").ok(), Some(8));
    assert_eq!(btf.type_size("double").ok(), Some(8));
    assert!(matches!(btf.type_size("only_fwd"), Err(BtfError::Incomplete(n)) if n == "only_fwd"));
    assert!(matches!(btf.type_size("nope"), Err(BtfError::TypeNotFound(n)) if n == "nope"));
}

#[test]
fn lookup_errors_are_specific() {
    let btf = sample_btf();
    assert!(matches!(
        btf.member_offset("task_struct.flags"),
        Err(BtfError::Bitfield { container, member }) if container == "task_struct" && member == "flags"
    ));
    assert!(matches!(
        btf.member_offset("task_struct.more"),
        Err(BtfError::Bitfield { .. })
    ));
    assert!(matches!(
        btf.member_offset("oldbits.a"),
        Err(BtfError::Bitfield { .. })
    ));
    assert_eq!(btf.member_offset("oldbits.b").ok(), Some(0));
    assert!(matches!(
        btf.member_offset("unaligned.x"),
        Err(BtfError::Bitfield { .. })
    ));
    assert!(matches!(
        btf.member_offset("task_struct.nope"),
        Err(BtfError::MemberNotFound { container, member }) if container == "task_struct" && member == "nope"
    ));
    assert!(matches!(
        btf.member_offset("file.f_path.nope"),
        Err(BtfError::MemberNotFound { container, .. }) if container == "file.f_path"
    ));
    assert!(matches!(
        btf.member_offset("path.dentry.d_name"),
        Err(BtfError::NotComposite { container, member, next })
            if container == "path" && member == "dentry" && next == "d_name"
    ));
    assert!(matches!(
        btf.member_offset("only_fwd.x"),
        Err(BtfError::Incomplete(_))
    ));
    assert!(matches!(
        btf.member_offset("nope.x"),
        Err(BtfError::TypeNotFound(_))
    ));
    for bad in ["task_struct", "", ".pid", "task_struct.", "a..b"] {
        assert!(
            matches!(btf.member_offset(bad), Err(BtfError::InvalidPath(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn foreign_endian_is_rejected_clearly_and_readable_on_request() {
    let foreign = match Endian::NATIVE {
        Endian::Little => Endian::Big,
        Endian::Big => Endian::Little,
    };
    let blob = sample(foreign);
    let err = Btf::from_bytes(&blob).err();
    assert!(matches!(err, Some(BtfError::ForeignEndian { blob }) if blob == foreign));
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("another machine"), "{msg}");
    let btf = Btf::from_bytes_any_endian(&blob).expect("foreign blob parses on request");
    assert_eq!(btf.endian(), foreign);
    assert_eq!(btf.member_offset("qstr.len").ok(), Some(4));
    assert_eq!(btf.member_offset("file.f_path.dentry").ok(), Some(16));
    assert_eq!(btf.type_size("upid").ok(), Some(16));
}

#[test]
fn header_errors() {
    let good = sample(Endian::NATIVE);
    let mut bad_magic = good.clone();
    bad_magic[0] = 0;
    assert!(matches!(
        Btf::from_bytes(&bad_magic),
        Err(BtfError::BadMagic(_))
    ));
    let mut bad_version = good.clone();
    bad_version[2] = 2;
    assert!(matches!(
        Btf::from_bytes(&bad_version),
        Err(BtfError::UnsupportedVersion(2))
    ));
    let mut short_hdr = good.clone();
    short_hdr[4..8].copy_from_slice(&8u32.to_ne_bytes());
    assert!(matches!(
        Btf::from_bytes(&short_hdr),
        Err(BtfError::BadHeader(_))
    ));
    let mut huge_types = good.clone();
    huge_types[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
    assert!(matches!(
        Btf::from_bytes(&huge_types),
        Err(BtfError::Truncated { .. })
    ));
    assert!(matches!(
        Btf::from_bytes(&[]),
        Err(BtfError::Truncated { .. })
    ));
    assert!(matches!(
        Btf::from_bytes(&[0x9f]),
        Err(BtfError::Truncated { .. })
    ));
}

#[test]
fn type_section_errors() {
    let mut b = Builder::new();
    b.int("int", 4);
    b.raw_kind("future", 25);
    assert!(matches!(
        Btf::from_bytes(&b.build()),
        Err(BtfError::UnknownKind {
            type_id: 2,
            kind: 25
        })
    ));
    let mut b = Builder::new();
    b.raw_kind("zero", 0);
    assert!(matches!(
        Btf::from_bytes(&b.build()),
        Err(BtfError::UnknownKind {
            type_id: 1,
            kind: 0
        })
    ));

    // A name offset past the string section.
    let mut b = Builder::new();
    b.int("int", 4);
    let mut blob = b.build();
    let name_at = super::parse::HEADER_LEN;
    blob[name_at..name_at + 4].copy_from_slice(&1000u32.to_ne_bytes());
    assert!(matches!(
        Btf::from_bytes(&blob),
        Err(BtfError::BadString {
            offset: 1000,
            type_id: 1
        })
    ));

    // A member pointing at a type id that does not exist.
    let mut b = Builder::new();
    b.struct_("s", 4, &[("m", 77, 0, 0)]);
    let btf = Btf::from_bytes(&b.build()).expect("parses; ids are checked on use");
    assert!(matches!(
        btf.member_offset("s.m"),
        Err(BtfError::BadTypeId(77))
    ));
    assert!(matches!(
        btf.member_offset("s.m.x"),
        Err(BtfError::BadTypeId(77))
    ));
}

#[test]
fn cycles_terminate() {
    let mut b = Builder::new();
    // typedef a -> typedef b -> typedef a (ids 1 and 2).
    b.typedef("a", 2);
    b.typedef("b", 1);
    // struct s { a x; } ; struct self_ref { <anon: self_ref> }
    b.struct_("s", 4, &[("x", 1, 0, 0)]);
    b.struct_("self_ref", 4, &[("", 4, 0, 0)]);
    let btf = Btf::from_bytes(&b.build()).expect("parses");
    assert!(matches!(btf.type_size("a"), Err(BtfError::TooDeep(_))));
    assert!(matches!(
        btf.member_offset("s.x.y"),
        Err(BtfError::TooDeep(_))
    ));
    assert!(matches!(
        btf.member_offset("self_ref.zz"),
        Err(BtfError::TooDeep(_))
    ));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let blob = sample(Endian::NATIVE);
    for len in 0..blob.len() {
        assert!(
            Btf::from_bytes(&blob[..len]).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
    assert!(Btf::from_bytes(&blob).is_ok());
}

/// xorshift64*: a deterministic stream for corruption tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn exercise(btf: &Btf) {
    for p in [
        "task_struct.pid",
        "task_struct.real_parent",
        "qstr.len",
        "file.f_path.dentry",
        "mm_struct.exe_file",
        "atomic_t.counter",
    ] {
        let _ = btf.member_offset(p);
    }
    for t in ["upid", "mac_t", "pid_t", "task_struct", "big"] {
        let _ = btf.type_size(t);
    }
    let _ = resolve_kernel_offsets(btf);
}

#[test]
fn corrupted_blobs_never_panic() {
    let blob = sample(Endian::NATIVE);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for _ in 0..3_000 {
        let mut b = blob.clone();
        for _ in 0..=(rng.next() % 4) {
            let i = (rng.next() as usize) % b.len();
            b[i] = match rng.next() % 4 {
                0 => 0,
                1 => 0xff,
                2 => b[i] ^ (1 << (rng.next() % 8)),
                _ => rng.next() as u8,
            };
        }
        if let Ok(btf) = Btf::from_bytes(&b) {
            parsed += 1;
            exercise(&btf);
        }
    }
    // Many corruptions hit names or offsets and still parse: the lookups
    // then ran on hostile data.
    assert!(parsed > 150, "only {parsed} corrupted blobs parsed");
}

#[test]
fn offsets_resolution_reports_each_missing_field() {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    b.struct_(
        "task_struct",
        8,
        &[("pid", int, 0, 0), ("tgid", int, 32, 0)],
    );
    b.struct_("upid", 16, &[("nr", int, 0, 0)]);
    let btf = Btf::from_bytes(&b.build()).expect("parses");
    let (offs, errs) = resolve_kernel_offsets(&btf);
    assert_eq!(offs.task_pid, 0);
    assert_eq!(offs.task_tgid, 4);
    assert_eq!(offs.upid_nr, 0);
    assert_eq!(offs.upid_size, 16);
    assert_eq!(offs.task_real_parent, MISSING);
    assert_eq!(errs.len(), KernelOffsets::FIELDS.len() - 4);
    let e = errs
        .iter()
        .find(|e| e.field == "task_real_parent")
        .expect("task_real_parent reported");
    assert_eq!(e.path, "task_struct.real_parent");
    assert!(
        matches!(&e.source, BtfError::MemberNotFound { member, .. } if member == "real_parent")
    );
    assert_eq!(
        e.to_string(),
        "kernel field task_real_parent (task_struct.real_parent): task_struct has no member \"real_parent\""
    );
    let e = errs
        .iter()
        .find(|e| e.field == "cred_uid")
        .expect("cred_uid reported");
    assert!(matches!(&e.source, BtfError::TypeNotFound(n) if n == "cred"));
}

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[test]
fn real_kernel_btf_resolves_every_field() {
    let btf = Btf::from_file(VMLINUX).expect("kernel BTF parses");
    assert!(btf.type_count() > 10_000, "{} types", btf.type_count());
    let (offs, errs) = resolve_kernel_offsets(&btf);
    let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(msgs.is_empty(), "unresolved: {msgs:#?}");
    for (field, _) in KernelOffsets::FIELDS {
        assert_ne!(offs.get(field), Some(MISSING), "{field}");
    }
    #[cfg(target_arch = "x86_64")]
    {
        // pid_t pid; pid_t tgid; are adjacent in task_struct.
        assert_eq!(offs.task_pid + 4, offs.task_tgid);
        assert_eq!(offs.upid_size, 16);
        assert_eq!(offs.upid_nr, 0);
        assert_eq!(offs.upid_ns, 8);
        assert_eq!(offs.qstr_len, 4);
        assert_eq!(offs.qstr_name, 8);
        assert_eq!(offs.path_mnt, 0);
        assert_eq!(offs.path_dentry, 8);
        // struct cred starts with atomic usage (long-sized since 6.13 or int);
        // uid..fsgid are eight consecutive 4-byte ids.
        assert_eq!(offs.cred_gid, offs.cred_uid + 4);
        assert_eq!(offs.cred_fsgid, offs.cred_uid + 28);
        assert_eq!(offs.cred_cap_permitted, offs.cred_cap_inheritable + 8);
        assert_eq!(offs.cred_cap_effective, offs.cred_cap_permitted + 8);
    }
    // Kind numbers in the kernel blob are all known to this reader.
    assert_eq!(kind::ENUM64, 19);
}

#[test]
fn truncated_real_kernel_btf_is_an_error() {
    let blob = std::fs::read(VMLINUX).expect("read kernel BTF");
    let mut rng = Rng(42);
    for _ in 0..8 {
        let len = (rng.next() as usize) % blob.len();
        assert!(
            Btf::from_bytes(&blob[..len]).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
}
