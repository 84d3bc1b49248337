//! The kernel half of containment: the kill-rule maps of `contain_exec`,
//! the egress policy maps and the `cgroup_sock_addr` links.
//!
//! The programs are loaded by the sensor (`sensor::loader::PROGRAMS`,
//! sensor `containment`); [`KernelEnforcer::take`] takes their maps and a
//! duplicate of each egress program's fd out of the loaded object, so the
//! enforcer can live in the containment engine independently of the sensor.

use std::{
    collections::BTreeMap,
    fs::File,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use agent_common::enforce::{
    ARGV_KEY_LEN, CgroupEntry, EGRESS_FIXED_BITS, EXE_KEY_LEN, Egress4, Egress6, EgressPolicy,
    KillConfig, egress_flags, egress_mode, egress_stat,
};
use aya::{
    Ebpf,
    maps::{
        Array, HashMap, MapData, MapError, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::ProgramFd,
};

use super::{
    action::{ActionRequest, Destination, EgressScope},
    kill_rules::{self, CompiledKill, KillRuleSpec},
    persist::{self, BlockRecord, PersistError, Store},
};

/// The egress programs, in attach order, with their `bpf_attach_type`.
const EGRESS_PROGRAMS: [(&str, u32); 4] = [
    ("contain_connect4", BPF_CGROUP_INET4_CONNECT),
    ("contain_connect6", BPF_CGROUP_INET6_CONNECT),
    ("contain_sendmsg4", BPF_CGROUP_UDP4_SENDMSG),
    ("contain_sendmsg6", BPF_CGROUP_UDP6_SENDMSG),
];

// enum bpf_attach_type / enum bpf_cmd values (uapi/linux/bpf.h, stable ABI).
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;
const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
const BPF_CGROUP_UDP6_SENDMSG: u32 = 15;
const BPF_LINK_CREATE: libc::c_long = 28;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "map {0} is missing from the eBPF object (was it built without the containment programs?)"
    )]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("program {0} is not loaded (see the `containment` sensor warnings)")]
    ProgramMissing(&'static str),
    #[error("duplicating the fd of program {name}: {source}")]
    ProgramFd {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("opening cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("attaching {program} to cgroup {path}: {source}")]
    Attach {
        program: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Compile(#[from] kill_rules::CompileError),
    #[error("the egress destination list has a bad prefix length {0}")]
    BadPrefix(u8),
    #[error("containment state: {0}")]
    Persist(#[from] PersistError),
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> KernelError {
    move |source| KernelError::Map { name, source }
}

/// An active egress block on one cgroup.
pub struct EgressBlock {
    pub path: PathBuf,
    pub scope: EgressScope,
    /// BPF links: closing them detaches the programs.
    links: Vec<OwnedFd>,
    /// LPM keys written for this block (removed on release).
    keys4: Vec<Key<Egress4>>,
    keys6: Vec<Key<Egress6>>,
    /// bpffs pins of the links (they keep the block while no agent runs).
    pins: Vec<PathBuf>,
}

impl std::fmt::Debug for EgressBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressBlock")
            .field("path", &self.path)
            .field("scope", &self.scope)
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

/// A kill record read from `ENFORCE_EVENTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelKill {
    pub rule_index: u32,
    /// The rule's id, if the rule set it was compiled from is still installed.
    pub rule_id: Option<String>,
    pub pid: u32,
    pub start_boottime_ns: u64,
    pub cgroup_id: u64,
    pub comm: String,
    pub executable: String,
    /// One of `agent_common::enforce::enforce_action`.
    pub action: u32,
    pub signal_ret: i64,
    pub flags: u32,
}

/// Owner of the containment maps and links.
pub struct KernelEnforcer {
    kill_config: Array<MapData, KillConfig>,
    kill_exe: HashMap<MapData, [u8; EXE_KEY_LEN], u64>,
    kill_exe_prefix: LpmTrie<MapData, [u8; EXE_KEY_LEN], u64>,
    kill_argv: LpmTrie<MapData, [u8; ARGV_KEY_LEN], u64>,
    cgroups: HashMap<MapData, u64, CgroupEntry>,
    egress_policy: HashMap<MapData, u64, EgressPolicy>,
    dest4: LpmTrie<MapData, Egress4, u8>,
    dest6: LpmTrie<MapData, Egress6, u8>,
    stats: PerCpuArray<MapData, u64>,
    records: Option<RingBuf<MapData>>,
    programs: Vec<(&'static str, u32, Option<ProgramFd>)>,
    blocks: BTreeMap<u64, EgressBlock>,
    /// Currently installed kill rules and what was written for them.
    installed: CompiledKill,
    container_roots: Vec<u64>,
    protected: Vec<u64>,
    /// `kubepods` cgroups and cleared pod cgroups (see
    /// [`Self::set_pod_gate`]).
    pod_roots: Vec<u64>,
    cleared: Vec<u64>,
    agent_tgid: u32,
    mm_arg_offsets: (u32, u32),
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.level`,
    /// `cgroup.ancestor_ids` for `contain_exec_ancestry`.
    ancestry: [u32; 4],
    /// The loaded exec-kill program, or `None`: kill rules then stay in
    /// user space ([`Self::install_kill_rules`] refuses).
    exec_program: Option<&'static str>,
    /// `linux_binprm.file` for `contain_exec_lsm` (deny at exec).
    bprm_file: u32,
    /// Pins and records of the blocks (see [`persist`]); `None`: blocks
    /// end with the agent.
    store: Option<Store>,
    /// What the state file says (kept in step with `blocks`).
    block_records: Vec<BlockRecord>,
}

/// What [`KernelEnforcer::reconcile`] did with one recorded block or pin.
#[derive(Debug)]
pub enum Reconciled {
    /// A recorded block is in force in this agent (`note` says how).
    Restored {
        record: BlockRecord,
        id: u64,
        note: String,
    },
    /// Pinned links no record knows: unpinned (the block is lifted).
    Stale { cgroup_id: u64, pins: Vec<PathBuf> },
    /// A recorded block whose cgroup is gone: dropped.
    Gone { record: BlockRecord },
    /// A recorded block that could not be put back in force.
    Failed { record: BlockRecord, error: String },
}

impl std::fmt::Debug for KernelEnforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelEnforcer")
            .field("rules", &self.installed.ids)
            .field("egress_blocks", &self.blocks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let m = ebpf.take_map(name).ok_or(KernelError::MissingMap(name))?;
    T::try_from(m).map_err(map_err(name))
}

/// Which exec-kill program the loader loaded: `contain_exec`, else its
/// fallback `contain_exec_ancestry` (kernels whose tracepoints lack
/// `bpf_get_current_ancestor_cgroup_id`), which needs the cgroup ancestry
/// offsets (`ancestry`, from BTF). `None` when neither can kill.
fn exec_kill_program(ebpf: &Ebpf, ancestry: &[u32; 4]) -> Option<&'static str> {
    let loaded = |name: &str| ebpf.program(name).is_some_and(|p| p.fd().is_ok());
    if loaded("contain_exec") {
        return Some("contain_exec");
    }
    if !loaded("contain_exec_ancestry") {
        tracing::warn!("no exec-kill program loaded: kill-process rules kill from user space");
        return None;
    }
    if ancestry.contains(&agent_common::offsets::MISSING) {
        tracing::warn!(
            "kernel BTF lacks the cgroup ancestry (task_struct.cgroups, css_set.dfl_cgrp, \
             cgroup.level, cgroup.ancestor_ids) contain_exec_ancestry needs: kill-process \
             rules kill from user space"
        );
        return None;
    }
    tracing::info!(
        "kill at exec in the kernel through contain_exec_ancestry (this kernel's tracepoints \
         lack bpf_get_current_ancestor_cgroup_id)"
    );
    Some("contain_exec_ancestry")
}

impl KernelEnforcer {
    /// The program that kills at exec in the kernel (see
    /// [`exec_kill_program`]).
    pub fn exec_program(&self) -> Option<&'static str> {
        self.exec_program
    }

    /// Takes the containment maps and egress program fds out of the loaded
    /// object. `btf` is the running kernel's BTF (for `mm_struct.arg_*`,
    /// needed by argv conditions; without it argv rules never match).
    pub fn take(ebpf: &mut Ebpf, btf: Option<&crate::btf::Btf>) -> Result<Self, KernelError> {
        let mut programs = Vec::new();
        for (name, attach_type) in EGRESS_PROGRAMS {
            let fd = match ebpf.program(name).map(|p| p.fd()) {
                Some(Ok(fd)) => Some(
                    fd.try_clone()
                        .map_err(|source| KernelError::ProgramFd { name, source })?,
                ),
                _ => {
                    tracing::warn!(
                        program = name,
                        "egress program not loaded; block-egress will fail for its hook"
                    );
                    None
                }
            };
            programs.push((name, attach_type, fd));
        }
        let mm = |field: &str| {
            btf.and_then(|b| b.member_offset(field).ok())
                .unwrap_or(agent_common::offsets::MISSING)
        };
        let mm_arg_offsets = (mm("mm_struct.arg_start"), mm("mm_struct.arg_end"));
        let ancestry = [
            mm("task_struct.cgroups"),
            mm("css_set.dfl_cgrp"),
            mm("cgroup.level"),
            mm("cgroup.ancestor_ids"),
        ];
        let exec_program = exec_kill_program(ebpf, &ancestry);
        let bprm_file = mm("linux_binprm.file");
        if exec_program.is_some()
            && ebpf
                .program("contain_exec_lsm")
                .is_some_and(|p| p.fd().is_ok())
        {
            if bprm_file == agent_common::offsets::MISSING {
                tracing::warn!(
                    "linux_binprm.file not found in BTF: kill-process rules kill at exec instead of denying it"
                );
            } else {
                tracing::info!(
                    "kill-process rules without argv conditions deny the exec (BPF LSM bprm_check_security)"
                );
            }
        }
        if mm_arg_offsets.0 == agent_common::offsets::MISSING {
            tracing::warn!(
                "mm_struct.arg_start not found in BTF; in-kernel argv kill conditions are disabled"
            );
        }
        Ok(Self {
            kill_config: take(ebpf, "KILL_CONFIG")?,
            kill_exe: take(ebpf, "KILL_EXE")?,
            kill_exe_prefix: take(ebpf, "KILL_EXE_PREFIX")?,
            kill_argv: take(ebpf, "KILL_ARGV")?,
            cgroups: take(ebpf, "ENFORCE_CGROUPS")?,
            egress_policy: take(ebpf, "EGRESS_POLICY")?,
            dest4: take(ebpf, "EGRESS_DEST4")?,
            dest6: take(ebpf, "EGRESS_DEST6")?,
            stats: take(ebpf, "EGRESS_STATS")?,
            records: Some(take(ebpf, "ENFORCE_EVENTS")?),
            programs,
            blocks: BTreeMap::new(),
            installed: CompiledKill::default(),
            container_roots: Vec::new(),
            protected: Vec::new(),
            pod_roots: Vec::new(),
            cleared: Vec::new(),
            agent_tgid: std::process::id(),
            mm_arg_offsets,
            ancestry,
            exec_program,
            bprm_file,
            store: None,
            block_records: Vec::new(),
        })
    }

    /// Takes the kill-record ring buffer (once) for [`decode_record`].
    pub fn take_records(&mut self) -> Option<RingBuf<MapData>> {
        self.records.take()
    }

    /// Sets the cgroups below which processes count as in a container, and
    /// the protected subtrees (never killed in the kernel). Takes effect
    /// immediately, with the installed rules.
    pub fn set_cgroup_facts(
        &mut self,
        container_roots: Vec<u64>,
        protected: Vec<u64>,
    ) -> Result<(), KernelError> {
        self.container_roots = container_roots;
        self.protected = protected;
        let installed = std::mem::take(&mut self.installed);
        let r = self.write_compiled(&installed);
        self.installed = installed;
        r
    }

    /// Fail-closed pods: below `pod_roots` the kernel kills only in the
    /// `cleared` pod cgroups (known, not protected); elsewhere below them it
    /// refuses with `REFUSED_UNKNOWN_POD` and user space decides once the
    /// pod is known. Empty `pod_roots` (host mode) disables the gate. Takes
    /// effect with the next [`Self::set_cgroup_facts`].
    pub fn set_pod_gate(&mut self, pod_roots: Vec<u64>, cleared: Vec<u64>) {
        self.pod_roots = pod_roots;
        self.cleared = cleared;
    }

    /// Replaces the in-kernel kill rules. Rules are switched off first and on
    /// last, so no half-written rule can fire.
    pub fn install_kill_rules(&mut self, rules: &[KillRuleSpec]) -> Result<(), KernelError> {
        if self.exec_program.is_none() && !rules.is_empty() {
            return Err(KernelError::ProgramMissing("contain_exec"));
        }
        let compiled = kill_rules::compile(rules)?;
        self.write_compiled(&compiled)?;
        self.installed = compiled;
        Ok(())
    }

    /// Id of the rule at `index` in the installed set.
    pub fn rule_id(&self, index: u32) -> Option<&str> {
        self.installed.ids.get(index as usize).map(String::as_str)
    }

    fn write_compiled(&mut self, c: &CompiledKill) -> Result<(), KernelError> {
        // Off first.
        let mut cfg = self
            .kill_config
            .get(&0, 0)
            .map_err(map_err("KILL_CONFIG"))?;
        cfg.active = 0;
        self.kill_config
            .set(0, cfg, 0)
            .map_err(map_err("KILL_CONFIG"))?;

        let old: Vec<_> = self.kill_exe.keys().filter_map(Result::ok).collect();
        for k in &old {
            let _ = self.kill_exe.remove(k);
        }
        for (k, m) in &c.exe {
            self.kill_exe.insert(k, m, 0).map_err(map_err("KILL_EXE"))?;
        }
        let old: Vec<_> = self.kill_exe_prefix.keys().filter_map(Result::ok).collect();
        for k in &old {
            let _ = self.kill_exe_prefix.remove(k);
        }
        for (bits, k, m) in &c.exe_prefix {
            self.kill_exe_prefix
                .insert(&Key::new(*bits, *k), m, 0)
                .map_err(map_err("KILL_EXE_PREFIX"))?;
        }
        let old: Vec<_> = self.kill_argv.keys().filter_map(Result::ok).collect();
        for k in &old {
            let _ = self.kill_argv.remove(k);
        }
        for (bits, k, m) in &c.argv {
            self.kill_argv
                .insert(&Key::new(*bits, *k), m, 0)
                .map_err(map_err("KILL_ARGV"))?;
        }
        let mut entries =
            kill_rules::cgroup_entries(&c.cgroup_rules, &self.container_roots, &self.protected);
        {
            use agent_common::enforce::cgroup_flags;
            for id in &self.pod_roots {
                entries.entry(*id).or_default().flags |= cgroup_flags::POD_ROOT;
            }
            for id in &self.cleared {
                entries.entry(*id).or_default().flags |= cgroup_flags::CLEARED;
            }
        }
        let old: Vec<_> = self.cgroups.keys().filter_map(Result::ok).collect();
        for k in old.iter().filter(|k| !entries.contains_key(k)) {
            let _ = self.cgroups.remove(k);
        }
        for (id, e) in &entries {
            self.cgroups
                .insert(id, e, 0)
                .map_err(map_err("ENFORCE_CGROUPS"))?;
        }
        // On last.
        let mut cfg = c.config;
        cfg.agent_tgid = self.agent_tgid;
        cfg.mm_arg_start = self.mm_arg_offsets.0;
        cfg.mm_arg_end = self.mm_arg_offsets.1;
        [
            cfg.task_cgroups,
            cfg.css_set_dfl_cgrp,
            cfg.cgroup_level,
            cfg.cgroup_ancestor_ids,
        ] = self.ancestry;
        cfg.bprm_file = self.bprm_file;
        self.kill_config
            .set(0, cfg, 0)
            .map_err(map_err("KILL_CONFIG"))?;
        Ok(())
    }

    /// Makes blocks outlive the agent: pinned under the store's bpffs
    /// directory and recorded in its state file. Call [`Self::reconcile`]
    /// next, before any new block.
    pub fn set_store(&mut self, store: Store) {
        self.store = Some(store);
    }

    /// Blocks egress from the cgroup at `path` (and its descendants). A
    /// second block on the same cgroup replaces the first one's policy.
    pub fn block_egress(&mut self, path: &Path, scope: &EgressScope) -> Result<u64, KernelError> {
        self.block_egress_for(path, scope, None)
    }

    /// [`Self::block_egress`] on behalf of `request` (recorded with the
    /// block, so a restarted agent knows what the block was for).
    pub fn block_egress_for(
        &mut self,
        path: &Path,
        scope: &EgressScope,
        request: Option<&ActionRequest>,
    ) -> Result<u64, KernelError> {
        let cgroup_err = |source| KernelError::Cgroup {
            path: path.to_path_buf(),
            source,
        };
        let dir = File::open(path).map_err(cgroup_err)?;
        let id = dir.metadata().map_err(cgroup_err)?.ino();
        if self.blocks.contains_key(&id) {
            self.release_egress(id)?;
        }
        // Recorded before pinned (see `persist`).
        self.block_records.retain(|r| r.cgroup_id != id);
        self.block_records.push(BlockRecord {
            cgroup_id: id,
            path: path.to_path_buf(),
            scope: scope.clone(),
            request: request.cloned(),
            placed_at: jiff::Timestamp::now(),
        });
        self.save_records();
        match self.attach(id, &dir, path, scope) {
            Ok(block) => {
                self.blocks.insert(id, block);
                Ok(id)
            }
            Err(e) => {
                self.block_records.retain(|r| r.cgroup_id != id);
                self.save_records();
                Err(e)
            }
        }
    }

    /// Writes the state file; a failure is logged and counted (the block
    /// itself holds until the agent restarts, which then removes its pins
    /// as unknown).
    fn save_records(&self) {
        if let Some(store) = &self.store
            && let Err(e) = store.save(&self.block_records)
        {
            super::metrics::LOSSES
                .get_or_create(&super::metrics::LossLabels {
                    what: "containment_state_write",
                })
                .inc();
            tracing::error!(error = %e, "containment state not written: blocks placed or lifted since the last write are not restored after an agent restart");
        }
    }

    /// Writes the policy of `scope` for cgroup `id` and attaches (and pins)
    /// every egress program to `dir`. On error nothing is left behind.
    fn attach(
        &mut self,
        id: u64,
        dir: &File,
        path: &Path,
        scope: &EgressScope,
    ) -> Result<EgressBlock, KernelError> {
        let (policy, dests) = match scope {
            EgressScope::All => (
                EgressPolicy {
                    mode: egress_mode::DENY_ALL,
                    flags: 0,
                },
                Vec::new(),
            ),
            EgressScope::AllExceptDns { resolvers } => {
                let flags = if resolvers.is_empty() {
                    0
                } else {
                    egress_flags::DNS_SERVERS_LISTED
                };
                let d = resolvers
                    .iter()
                    .map(|a| Destination {
                        addr: *a,
                        prefix_len: if a.is_ipv4() { 32 } else { 128 },
                        port: 53,
                    })
                    .collect();
                (
                    EgressPolicy {
                        mode: egress_mode::ALLOW_DNS,
                        flags,
                    },
                    d,
                )
            }
            EgressScope::Destinations(d) => (
                EgressPolicy {
                    mode: egress_mode::DENY_LISTED,
                    flags: 0,
                },
                d.clone(),
            ),
        };
        let mut block = EgressBlock {
            path: path.to_path_buf(),
            scope: scope.clone(),
            links: Vec::new(),
            keys4: Vec::new(),
            keys6: Vec::new(),
            pins: Vec::new(),
        };
        let mut failed = None;
        for d in &dests {
            if let Err(e) = self.add_destination(id, d, &mut block) {
                failed = Some(e);
                break;
            }
        }
        if failed.is_none()
            && let Err(e) = self.egress_policy.insert(id, policy, 0)
        {
            failed = Some(map_err("EGRESS_POLICY")(e));
        }
        if failed.is_none() {
            for (name, attach_type, fd) in &self.programs {
                let result = match fd {
                    Some(fd) => link_create(fd.as_fd().as_raw_fd(), dir.as_raw_fd(), *attach_type),
                    None => Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "program not loaded",
                    )),
                };
                match result {
                    Ok(link) => {
                        if let Some(store) = &self.store {
                            let hook = name.trim_start_matches("contain_");
                            match store.pin(&link, id, hook) {
                                Ok(p) => block.pins.push(p),
                                Err(e) => {
                                    failed = Some(e.into());
                                    break;
                                }
                            }
                        }
                        block.links.push(link);
                    }
                    Err(source) => {
                        failed = Some(KernelError::Attach {
                            program: name,
                            path: path.to_path_buf(),
                            source,
                        });
                        break;
                    }
                }
            }
        }
        if let Some(e) = failed {
            // Undo: unpinned, the links close on drop; policy and keys are
            // removed.
            for p in &block.pins {
                let _ = persist::unpin(p);
            }
            self.clear_block_maps(id, &block);
            return Err(e);
        }
        Ok(block)
    }

    /// Reconciles the recorded blocks with the pins a previous agent left:
    /// a recorded block whose cgroup still exists is attached again with
    /// this agent's programs **before** the old pins are removed (no
    /// window; an upgrade moves the block to the new programs); if that
    /// fails the old pins are kept and adopted. Pins no record knows are
    /// removed; records of cgroups that are gone are dropped.
    pub fn reconcile(&mut self) -> Result<Vec<Reconciled>, KernelError> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        let records = store.load()?;
        let mut pins: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
        for p in store.pins()? {
            pins.entry(p.cgroup_id).or_default().push(p.path);
        }
        let mut out = Vec::new();
        self.block_records.clear();
        for rec in records {
            if self
                .block_records
                .iter()
                .any(|r| r.cgroup_id == rec.cgroup_id)
            {
                continue;
            }
            let old = pins.remove(&rec.cgroup_id).unwrap_or_default();
            let dir = File::open(&rec.path)
                .ok()
                .filter(|d| d.metadata().is_ok_and(|m| m.ino() == rec.cgroup_id));
            let Some(dir) = dir else {
                for p in &old {
                    unpin_logged(p);
                }
                out.push(Reconciled::Gone { record: rec });
                continue;
            };
            match self.attach(rec.cgroup_id, &dir, &rec.path, &rec.scope) {
                Ok(block) => {
                    for p in &old {
                        unpin_logged(p);
                    }
                    let note = if old.is_empty() {
                        "re-applied from the record (its pinned links were gone: a reboot or a cleared bpffs)".to_string()
                    } else {
                        format!(
                            "the previous agent's {} pinned links stayed attached until this agent's links replaced them",
                            old.len()
                        )
                    };
                    self.blocks.insert(rec.cgroup_id, block);
                    self.block_records.push(rec.clone());
                    out.push(Reconciled::Restored {
                        id: rec.cgroup_id,
                        record: rec,
                        note,
                    });
                }
                Err(e) if !old.is_empty() => {
                    let block = EgressBlock {
                        path: rec.path.clone(),
                        scope: rec.scope.clone(),
                        links: Vec::new(),
                        keys4: Vec::new(),
                        keys6: Vec::new(),
                        pins: old,
                    };
                    self.blocks.insert(rec.cgroup_id, block);
                    self.block_records.push(rec.clone());
                    out.push(Reconciled::Restored {
                        id: rec.cgroup_id,
                        record: rec,
                        note: format!("the previous agent's pinned links are kept ({e})"),
                    });
                }
                Err(e) => {
                    out.push(Reconciled::Failed {
                        record: rec,
                        error: e.to_string(),
                    });
                }
            }
        }
        for (cgroup_id, paths) in pins {
            for p in &paths {
                unpin_logged(p);
            }
            out.push(Reconciled::Stale {
                cgroup_id,
                pins: paths,
            });
        }
        self.save_records();
        Ok(out)
    }

    fn add_destination(
        &mut self,
        id: u64,
        d: &Destination,
        block: &mut EgressBlock,
    ) -> Result<(), KernelError> {
        let port = d.port.to_be_bytes();
        match d.addr {
            IpAddr::V4(a) => {
                if d.prefix_len > 32 {
                    return Err(KernelError::BadPrefix(d.prefix_len));
                }
                let key = Key::new(
                    EGRESS_FIXED_BITS + u32::from(d.prefix_len),
                    Egress4 {
                        cgroup: id.to_ne_bytes(),
                        port,
                        addr: mask_bytes(a.octets(), d.prefix_len),
                    },
                );
                self.dest4
                    .insert(&key, 1, 0)
                    .map_err(map_err("EGRESS_DEST4"))?;
                block.keys4.push(key);
            }
            IpAddr::V6(a) => {
                if d.prefix_len > 128 {
                    return Err(KernelError::BadPrefix(d.prefix_len));
                }
                let key = Key::new(
                    EGRESS_FIXED_BITS + u32::from(d.prefix_len),
                    Egress6 {
                        cgroup: id.to_ne_bytes(),
                        port,
                        addr: mask_bytes(a.octets(), d.prefix_len),
                    },
                );
                self.dest6
                    .insert(&key, 1, 0)
                    .map_err(map_err("EGRESS_DEST6"))?;
                block.keys6.push(key);
            }
        }
        Ok(())
    }

    fn clear_block_maps(&mut self, id: u64, block: &EgressBlock) {
        let _ = self.egress_policy.remove(&id);
        for k in &block.keys4 {
            let _ = self.dest4.remove(k);
        }
        for k in &block.keys6 {
            let _ = self.dest6.remove(k);
        }
    }

    /// Lifts the egress block of cgroup `id`: the links are closed (the
    /// programs detach) and the policy is removed. `Ok(false)` if there was
    /// no block.
    pub fn release_egress(&mut self, id: u64) -> Result<bool, KernelError> {
        let Some(block) = self.blocks.remove(&id) else {
            return Ok(false);
        };
        // Unrecorded before unpinned (see `persist`).
        self.block_records.retain(|r| r.cgroup_id != id);
        self.save_records();
        for p in &block.pins {
            persist::unpin(p)?;
        }
        self.clear_block_maps(id, &block);
        drop(block);
        Ok(true)
    }

    /// The cgroup ids currently blocked, with their paths.
    pub fn egress_blocks(&self) -> impl Iterator<Item = (u64, &EgressBlock)> {
        self.blocks.iter().map(|(k, v)| (*k, v))
    }

    /// Sum over CPUs of an `egress_stat` counter.
    pub fn stat(&self, index: u32) -> u64 {
        self.stats
            .get(&index, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    /// Denied connect/sendmsg calls since load.
    pub fn egress_denied(&self) -> u64 {
        [
            egress_stat::DENIED_CONNECT4,
            egress_stat::DENIED_CONNECT6,
            egress_stat::DENIED_SENDMSG4,
            egress_stat::DENIED_SENDMSG6,
        ]
        .into_iter()
        .map(|i| self.stat(i))
        .sum()
    }
}

/// Unpins during reconciliation: a pin that cannot be removed is logged and
/// left (its block stays), the rest of the reconciliation goes on.
fn unpin_logged(p: &Path) {
    if let Err(e) = persist::unpin(p) {
        tracing::warn!(error = %e, "pinned egress link not removed: its block stays until `picket purge-containment`");
    }
}

/// `address` with the bits beyond `prefix_len` cleared.
fn mask_bytes<const N: usize>(mut address: [u8; N], prefix_len: u8) -> [u8; N] {
    for (i, b) in address.iter_mut().enumerate() {
        let bits = (prefix_len as usize).saturating_sub(i * 8).min(8);
        *b &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    address
}

/// `bpf(BPF_LINK_CREATE)` of a cgroup program. cgroup links always attach
/// in multi mode (flags 0), so other programs on the same cgroup (e.g. the
/// container runtime's) keep running. Closing the returned fd detaches.
fn link_create(prog_fd: i32, cgroup_fd: i32, attach_type: u32) -> std::io::Result<OwnedFd> {
    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
        /// The rest of `union bpf_attr` this command may read: zero.
        _rest: [u64; 8],
    }
    let attr = LinkCreate {
        prog_fd: prog_fd as u32,
        target_fd: cgroup_fd as u32,
        attach_type,
        flags: 0,
        _rest: [0; 8],
    };
    // SAFETY: bpf(2) with a properly sized, zero-padded attribute struct that
    // lives across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &attr as *const LinkCreate,
            std::mem::size_of::<LinkCreate>() as u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Decodes one `ENFORCE_EVENTS` record (untrusted bytes: length-checked).
pub fn decode_record(buf: &[u8], rule_id: impl Fn(u32) -> Option<String>) -> Option<KernelKill> {
    use agent_common::enforce::{ENFORCE_RECORD_KIND, EnforceEvent};
    if buf.len() != std::mem::size_of::<EnforceEvent>() {
        return None;
    }
    // SAFETY: length checked; EnforceEvent is plain old data (any bit
    // pattern is valid); read_unaligned tolerates the ring's alignment.
    let ev: EnforceEvent = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    if ev.header.kind != ENFORCE_RECORD_KIND {
        return None;
    }
    let n = (ev.exe_len as usize).min(EXE_KEY_LEN);
    Some(KernelKill {
        rule_index: ev.rule,
        rule_id: rule_id(ev.rule),
        pid: ev.header.pid,
        start_boottime_ns: ev.header.start_boottime_ns,
        cgroup_id: ev.header.cgroup_id,
        comm: crate::sensor::decode::cstr(&ev.comm),
        executable: if n == 0 {
            String::new()
        } else {
            kill_rules::path_from_exe_key(&ev.exe[..n])
        },
        action: ev.action,
        signal_ret: ev.signal_ret,
        flags: ev.flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_prefixes() {
        assert_eq!(mask_bytes([10, 1, 2, 3], 8), [10, 0, 0, 0]);
        assert_eq!(mask_bytes([10, 255, 2, 3], 12), [10, 240, 0, 0]);
        assert_eq!(mask_bytes([1, 2, 3, 4], 32), [1, 2, 3, 4]);
        assert_eq!(mask_bytes([1, 2, 3, 4], 0), [0, 0, 0, 0]);
    }

    #[test]
    fn decodes_records_and_rejects_garbage() {
        use agent_common::enforce::{ENFORCE_RECORD_KIND, EnforceEvent, enforce_action};
        // SAFETY: all-zero is a valid EnforceEvent.
        let mut ev: EnforceEvent = unsafe { std::mem::zeroed() };
        ev.header.kind = ENFORCE_RECORD_KIND;
        ev.header.pid = 77;
        ev.rule = 2;
        ev.action = enforce_action::KILLED;
        let key = b"\0pmt\0kcab";
        ev.exe[..key.len()].copy_from_slice(key);
        ev.exe_len = key.len() as u32;
        ev.comm[..4].copy_from_slice(b"back");
        // SAFETY: test-only view of a POD value's bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const EnforceEvent).cast::<u8>(),
                size_of::<EnforceEvent>(),
            )
        };
        let k = decode_record(bytes, |i| (i == 2).then(|| "r2".to_string())).unwrap();
        assert_eq!(k.executable, "/tmp/back");
        assert_eq!(
            (k.pid, k.rule_index, k.rule_id.as_deref(), k.comm.as_str()),
            (77, 2, Some("r2"), "back")
        );
        assert_eq!(decode_record(&bytes[1..], |_| None), None);
        let mut other = bytes.to_vec();
        other[0] = 1;
        other[1] = 0;
        assert_eq!(decode_record(&other, |_| None), None);
    }
}
