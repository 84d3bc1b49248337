//! Real runtime, real kernel: containers started by a private containerd
//! with runc (see `picket_tests::containerd`), watched by the shipped
//! `picket run` with the default rules. Root only; they fail (never skip)
//! elsewhere.

use std::{path::Path, time::Duration};

use picket::model::{Event, EventKindName};
use picket_tests::{
    containerd::{CgroupTree, Containerd, Layout, TestNetns, build_rootfs, new_container_id},
    docker::Dockerd,
    kernel_test,
    pins::PinDir,
    podman::Podman,
    run::{PicketRun, Record, RunOptions},
};

const WAIT: Duration = Duration::from_secs(20);

fn in_container(e: &Event, id: &str) -> bool {
    e.container.as_ref().is_some_and(|c| c.id == id)
}

/// The events received so far.
fn events(run: &PicketRun) -> Vec<&Event> {
    run.records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(&**e),
            Record::Alert(_) => None,
        })
        .collect()
}

/// The cgroup id (inode) of a directory.
fn cgroup_id(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).expect("cgroup dir").ino()
}

fn pod_uid_of(e: &Event) -> Option<&str> {
    e.k8s.as_ref().map(|k| k.pod.uid.as_str())
}

#[test]
fn exec_into_pod_and_init_tree() {
    let t = kernel_test!(exec_into_pod_and_init_tree);
    let tree = CgroupTree::new("exec");
    let ctrd = Containerd::start();
    let pod_uid = "3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8";
    let id = new_container_id();
    let rel = Layout::KubeSystemd.path(pod_uid, &id);
    let dir = tree.precreate(&rel);
    let tree_id = cgroup_id(&dir);
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![dir],
        events: true,
        ..Default::default()
    });
    let ctr = ctrd.run(
        &id,
        &tree.cgroup_path(&rel),
        &[
            "/bin/sh",
            "-c",
            "/bin/echo started >/dev/null; exec /bin/sleep 1000",
        ],
    );
    // The entrypoint's child is in the container's init tree.
    let echo = picket.wait_event("the entrypoint's child", WAIT, |e| {
        e.event.kind == EventKindName::Exec && e.process.command_args == ["/bin/echo", "started"]
    });
    assert!(in_container(&echo, &id), "{echo:?}");
    assert_eq!(echo.process.in_init_tree, Some(true));
    assert_eq!(echo.process.parent_vpid, 1, "child of the entrypoint");
    assert_eq!(echo.process.parent_pid, ctr.init_pid);
    assert_eq!(pod_uid_of(&echo), Some(pod_uid));
    let init = picket.wait_event("the entrypoint's final exec", WAIT, |e| {
        e.event.kind == EventKindName::Exec && e.process.command_args == ["/bin/sleep", "1000"]
    });
    assert_eq!(init.process.vpid, 1);
    assert_eq!(init.process.pid, ctr.init_pid);

    // `kubectl exec` = `runc exec`, as user nobody.
    let out = ctr.exec("e1", Some("65534:65534"), &["/bin/id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "65534");
    let alert = picket.wait_alert("exec-into-pod alert", WAIT, |a| {
        a.rule.id == "exec-into-pod" && a.event.process.command_args == ["/bin/id", "-u"]
    });
    let p = &alert.event.process;
    assert_eq!(p.user.id, 65534);
    assert_eq!(p.group.id, 65534);
    assert_eq!(p.parent_vpid, 0, "runc's exec parent is outside the pid ns");
    assert_ne!(p.vpid, 1);
    // runc exec's parent chain (runc, `runc init`) started outside the
    // traced cgroup, so the agent cannot place it: unknown, never "in the
    // init tree".
    assert_ne!(p.in_init_tree, Some(true));
    let c = alert.event.container.as_ref().expect("container section");
    assert_eq!(
        (c.id.as_str(), c.runtime.as_str()),
        (id.as_str(), "containerd")
    );
    assert_eq!(pod_uid_of(&alert.event), Some(pod_uid));
    assert!(
        alert.message.contains("/bin/id -u (uid 65534"),
        "{}",
        alert.message
    );

    picket.drain(Duration::from_millis(500));
    assert_eq!(
        picket.alerts_of("exec-into-pod").len(),
        1,
        "only the exec, not the entrypoint's tree: {}",
        picket.dump()
    );
    // Every event of the container's cgroup is attributed.
    let cgroup_events: Vec<&Event> = events(&picket)
        .into_iter()
        .filter(|e| e.process.linux.cgroup_id == tree_id)
        .collect();
    assert!(cgroup_events.len() >= 4, "{}", picket.dump());
    for e in &cgroup_events {
        assert!(in_container(e, &id), "unattributed: {e:?}");
    }
    drop(ctr);
    t.done();
}

#[test]
fn every_layout_is_attributed() {
    let t = kernel_test!(every_layout_is_attributed);
    let tree = CgroupTree::new("layouts");
    let ctrd = Containerd::start();
    let pod_uid = "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6";
    // (layout, expected runtime, expected pod UID)
    let cases = [
        // A bare id under kubepods is written by containerd and docker
        // alike: the path does not say which.
        (Layout::KubeCgroupfs, "", Some(pod_uid)),
        (Layout::KubeSystemd, "containerd", Some(pod_uid)),
        (Layout::Docker, "docker", None),
        (Layout::Podman, "podman", None),
    ];
    let ids: Vec<String> = cases.iter().map(|_| new_container_id()).collect();
    let rels: Vec<String> = cases
        .iter()
        .zip(&ids)
        .map(|((l, _, _), id)| l.path(pod_uid, id))
        .collect();
    let dirs: Vec<_> = rels.iter().map(|r| tree.precreate(r)).collect();
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: dirs.clone(),
        events: true,
        ..Default::default()
    });
    let mut running = Vec::new();
    for (i, rel) in rels.iter().enumerate() {
        let script = format!("/bin/echo layout-{i} >/dev/null; exec /bin/sleep 1000");
        running.push(ctrd.run(&ids[i], &tree.cgroup_path(rel), &["/bin/sh", "-c", &script]));
    }
    for (i, (layout, runtime, pod)) in cases.iter().enumerate() {
        let marker = format!("layout-{i}");
        let ev = picket.wait_event(&format!("{layout:?}'s exec"), WAIT, |e| {
            e.event.kind == EventKindName::Exec && e.process.command_args == ["/bin/echo", &marker]
        });
        let c = ev
            .container
            .as_ref()
            .unwrap_or_else(|| panic!("{layout:?}: {ev:?}"));
        assert_eq!(
            (c.id.as_str(), c.runtime.as_str()),
            (ids[i].as_str(), *runtime),
            "{layout:?}"
        );
        assert_eq!(pod_uid_of(&ev), *pod, "{layout:?}");
        assert_eq!(
            ev.process.linux.cgroup_id,
            cgroup_id(&dirs[i]),
            "{layout:?}"
        );
        assert_eq!(
            ev.process.linux.cgroup,
            tree.cgroup_path(&rels[i]),
            "{layout:?}"
        );
        assert_eq!(ev.process.parent_pid, running[i].init_pid, "{layout:?}");
    }
    drop(running);
    t.done();
}

#[test]
fn a_100ms_container_is_attributed_in_every_event() {
    let t = kernel_test!(a_100ms_container_is_attributed_in_every_event);
    let tree = CgroupTree::new("short");
    let ctrd = Containerd::start();
    let pod_uid = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";
    let id = new_container_id();
    let rel = Layout::KubeSystemd.path(pod_uid, &id);
    let dir = tree.precreate(&rel);
    let cg = cgroup_id(&dir);
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![dir],
        events: true,
        ..Default::default()
    });
    let ctr = ctrd.run(
        &id,
        &tree.cgroup_path(&rel),
        &[
            "/bin/sh",
            "-c",
            "/bin/cat /etc/passwd >/dev/null; /bin/sleep 0.1",
        ],
    );
    ctr.wait_stopped(WAIT);
    // Gone before the agent is asked anything more: the task is deleted
    // and runc removed the cgroup.
    drop(ctr);
    assert!(
        !tree.cgroup_exists(&rel),
        "runc removed the container's cgroup"
    );
    picket.wait_event("the sleep's exit", WAIT, |e| {
        e.event.kind == EventKindName::Exit && e.process.command_args == ["/bin/sleep", "0.1"]
    });
    picket.drain(Duration::from_millis(500));
    let mine: Vec<&Event> = events(&picket)
        .into_iter()
        .filter(|e| e.process.linux.cgroup_id == cg)
        .collect();
    let execs: Vec<Vec<String>> = mine
        .iter()
        .filter(|e| e.event.kind == EventKindName::Exec)
        .map(|e| e.process.command_args.clone())
        .collect();
    for want in [vec!["/bin/cat", "/etc/passwd"], vec!["/bin/sleep", "0.1"]] {
        assert!(
            execs.iter().any(|a| *a == want),
            "no exec of {want:?}: {execs:?}"
        );
    }
    for e in &mine {
        let c = e
            .container
            .as_ref()
            .unwrap_or_else(|| panic!("unattributed: {e:?}"));
        assert_eq!(
            (c.id.as_str(), c.runtime.as_str()),
            (id.as_str(), "containerd")
        );
        assert_eq!(pod_uid_of(e), Some(pod_uid), "{e:?}");
        assert_eq!(e.process.linux.cgroup, tree.cgroup_path(&rel));
    }
    t.done();
}

#[test]
fn restart_in_the_same_pod_keeps_attribution() {
    let t = kernel_test!(restart_in_the_same_pod_keeps_attribution);
    let tree = CgroupTree::new("restart");
    let ctrd = Containerd::start();
    let pod_uid = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    // kubelet restarts a container as a new container (new id) in the
    // same pod cgroup.
    let first = new_container_id();
    let second = new_container_id();
    let rel1 = Layout::KubeCgroupfs.path(pod_uid, &first);
    let rel2 = Layout::KubeCgroupfs.path(pod_uid, &second);
    let dirs = vec![tree.precreate(&rel1), tree.precreate(&rel2)];
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: dirs,
        events: true,
        ..Default::default()
    });
    let c1 = ctrd.run(
        &first,
        &tree.cgroup_path(&rel1),
        &["/bin/sh", "-c", "/bin/echo run-1 >/dev/null; exit 3"],
    );
    c1.wait_stopped(WAIT);
    drop(c1);
    let c2 = ctrd.run(
        &second,
        &tree.cgroup_path(&rel2),
        &[
            "/bin/sh",
            "-c",
            "/bin/echo run-2 >/dev/null; exec /bin/sleep 1000",
        ],
    );
    for (marker, id) in [("run-1", &first), ("run-2", &second)] {
        let ev = picket.wait_event(marker, WAIT, |e| {
            e.event.kind == EventKindName::Exec && e.process.command_args == ["/bin/echo", marker]
        });
        assert!(in_container(&ev, id), "{marker}: {ev:?}");
        assert_eq!(pod_uid_of(&ev), Some(pod_uid), "{marker}");
        assert_eq!(ev.process.in_init_tree, Some(true), "{marker}");
    }
    let exec = c2.exec("e1", None, &["/bin/true"]);
    assert!(exec.status.success());
    let alert = picket.wait_alert("exec into the restarted container", WAIT, |a| {
        a.rule.id == "exec-into-pod" && a.event.process.command_args == ["/bin/true"]
    });
    assert!(in_container(&alert.event, &second), "{alert:?}");
    assert_eq!(pod_uid_of(&alert.event), Some(pod_uid));
    drop(c2);
    t.done();
}

#[test]
fn runtime_setup_raises_no_alert() {
    let t = kernel_test!(runtime_setup_raises_no_alert);
    let tree = CgroupTree::new("setup");
    // The runtime runs in a traced cgroup too, as on a node (the agent
    // sees runc init's exec before runc moves it into the container).
    let runtime_dir = tree.precreate("system.slice/containerd.service");
    let ctrd = Containerd::start_in(Some(&runtime_dir));
    let pod_uid = "1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9";
    let id = new_container_id();
    let rel = Layout::KubeSystemd.path(pod_uid, &id);
    let dir = tree.precreate(&rel);
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![runtime_dir, dir],
        events: true,
        ..Default::default()
    });
    let ctr = ctrd.run(
        &id,
        &tree.cgroup_path(&rel),
        &["/bin/sh", "-c", "exec /bin/sleep 1000"],
    );
    let init = picket.wait_event("the entrypoint's final exec", WAIT, |e| {
        e.event.kind == EventKindName::Exec && e.process.command_args == ["/bin/sleep", "1000"]
    });
    assert_eq!(init.process.pid, ctr.init_pid);
    assert!(in_container(&init, &id));
    picket.drain(Duration::from_millis(1000));
    // runc init: namespaces, mounts, pivot_root, capability drops,
    // `runc:[2:INIT]`: the runtime's own set-up, not container activity.
    assert!(picket.alerts().is_empty(), "{}", picket.dump());
    // The runtime's exec stage (`runc exec` joins the namespaces) is not
    // an escape either: the exec itself is the only alert.
    ctr.exec("e1", None, &["/bin/true"]);
    picket.wait_alert("exec-into-pod alert", WAIT, |a| {
        a.rule.id == "exec-into-pod" && a.event.process.command_args == ["/bin/true"]
    });
    picket.drain(Duration::from_millis(1000));
    assert_eq!(
        picket
            .alerts()
            .iter()
            .map(|a| a.rule.id.as_str())
            .collect::<Vec<_>>(),
        ["exec-into-pod"],
        "{}",
        picket.dump()
    );
    drop(ctr);
    t.done();
}

#[test]
fn kernel_kill_process_on_kubernetes_layouts() {
    let t = kernel_test!(kernel_kill_process_on_kubernetes_layouts);
    kill_on_layouts("kill-k8s", &[Layout::KubeCgroupfs, Layout::KubeSystemd]);
    t.done();
}

/// The containment layer recognises docker-/libpod- scopes as containers
/// (issue #16).
#[test]
fn kernel_kill_process_on_docker_and_podman_layouts() {
    let t = kernel_test!(kernel_kill_process_on_docker_and_podman_layouts);
    kill_on_layouts("kill-host", &[Layout::Docker, Layout::Podman]);
    t.done();
}

/// A rule's kernel kill-process stops a `ctr task exec`'d program at exec
/// in containers of each layout.
fn kill_on_layouts(tag: &str, layouts: &[Layout]) {
    let tree = CgroupTree::new(tag);
    let ctrd = Containerd::start();
    let pod_uid = "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f";
    let ids: Vec<String> = layouts.iter().map(|_| new_container_id()).collect();
    let rels: Vec<String> = layouts
        .iter()
        .zip(&ids)
        .map(|(l, id)| l.path(pod_uid, id))
        .collect();
    let dirs: Vec<_> = rels.iter().map(|r| tree.precreate(r)).collect();
    // A program of its own (busybox runs the applet its name says), so
    // the kernel kill at exec spares the entrypoint (busybox too).
    std::fs::create_dir_all(ctrd.rootfs.join("opt")).expect("mkdir opt");
    std::fs::copy(ctrd.rootfs.join("bin/busybox"), ctrd.rootfs.join("opt/cat")).expect("copy");
    let work = tempfile::tempdir().expect("tempdir");
    let rules = work.path().join("kill.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - id: rt-kill\n    name: rt-kill\n    description: real-runtime kill\n    severity: critical\n    events: [exec]\n    condition: 'container.id exists and process.executable.path == \"/opt/cat\"'\n    output: 'ran {process.command_line}'\n    tags: [T1059]\n    actions: [alert, kill-process]\n",
    )
    .expect("rules");
    let config = work.path().join("picket.yaml");
    // This test's own pin and state directories, never the host's.
    let pins = PinDir::new("rt-kill");
    std::fs::write(
        &config,
        format!(
            "containment:\n  enabled: true\n  rate_limits: {{per_rule: null, per_namespace: null, global: null}}\n  pin_dir: {}\n  state_dir: {}\n",
            pins.0.display(),
            work.path().join("state").display()
        ),
    )
    .expect("config");
    let mut picket = PicketRun::start(RunOptions {
        rules: vec![rules],
        only_cgroups: dirs.clone(),
        extra_args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    });
    let running: Vec<_> = rels
        .iter()
        .zip(&ids)
        .map(|(rel, id)| ctrd.run(id, &tree.cgroup_path(rel), &["/bin/sleep", "1000"]))
        .collect();
    for (i, ctr) in running.iter().enumerate() {
        let out = ctr.try_exec("k1", &["/opt/cat", "/etc/passwd"]);
        assert!(!out.status.success(), "{:?}: {out:?}", layouts[i]);
        assert!(
            out.stdout.is_empty(),
            "{:?}: cat ran although the kernel should have killed it at exec",
            layouts[i]
        );
        let cg = cgroup_id(&dirs[i]);
        // The detection names the container; the audit names its cgroup.
        let alert = picket.wait_alert(&format!("{:?}'s detection", layouts[i]), WAIT, |a| {
            a.rule.id == "rt-kill" && a.event.process.linux.cgroup_id == cg
        });
        assert!(in_container(&alert.event, &ids[i]), "{:?}", layouts[i]);
        let audit = picket.wait_alert(&format!("{:?}'s kill audit", layouts[i]), WAIT, |a| {
            a.rule.id == "containment-action" && a.message.ends_with(&format!("in cgroup id {cg}"))
        });
        let c = audit
            .event
            .containment
            .as_ref()
            .expect("containment section");
        assert_eq!(
            (c.action.as_str(), c.outcome.as_str(), c.trigger.as_str()),
            ("kill-process", "succeeded", "kernel"),
            "{:?}: {c:?}",
            layouts[i]
        );
        assert_eq!(c.rule_id.as_deref(), Some("rt-kill"));
        assert_eq!(audit.event.process.pid, alert.event.process.pid);
    }
    drop(running);
}

/// Host-mode containerd (no Kubernetes): `container.name` and
/// `container.image.name` come from containerd's containers API over its
/// socket, asked by the agent in the background. The container is
/// created from an image the test imports (so containerd records the
/// image reference) with nerdctl's name label.
#[test]
fn host_mode_name_and_image_from_the_containerd_api() {
    let t = kernel_test!(host_mode_name_and_image_from_the_containerd_api);
    let tree = CgroupTree::new("api");
    let ctrd = Containerd::start();
    let image = "docker.io/picket/busybox:test";
    ctrd.import_image(image);
    let id = new_container_id();
    let rel = Layout::ContainerdHost.path("", &id);
    let dir = tree.precreate(&rel);
    let work = tempfile::tempdir().expect("tempdir");
    let config = work.path().join("picket.yaml");
    std::fs::write(
        &config,
        format!(
            "runtimes:\n  containerd_socket: {}\n  containerd_namespaces: [default]\n  docker_socket: ''\n  podman_socket: ''\n",
            ctrd.socket.display()
        ),
    )
    .expect("config");
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![dir],
        events: true,
        extra_args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    });
    let ctr = ctrd.run_image(
        image,
        &id,
        &tree.cgroup_path(&rel),
        &["nerdctl/name=web"],
        &[
            "/bin/sh",
            "-c",
            "while true; do /bin/echo tick >/dev/null; /bin/sleep 0.2; done",
        ],
    );
    // The lookup runs in the background: a later event has the answer.
    let named = picket.wait_event("an event with the container's name", WAIT, |e| {
        in_container(e, &id) && e.container.as_ref().is_some_and(|c| !c.name.is_empty())
    });
    let c = named.container.as_ref().expect("container");
    assert_eq!(c.name, "web");
    assert_eq!(c.image.as_ref().map(|i| i.name.as_str()), Some(image));
    // The bare id under a containerd namespace does not name the runtime;
    // the runtime that answered does.
    assert_eq!(c.runtime, "containerd");

    ctr.exec("e1", None, &["/bin/id", "-u"]);
    let alert = picket.wait_alert("exec-into-pod alert", WAIT, |a| {
        a.rule.id == "exec-into-pod" && a.event.process.command_args == ["/bin/id", "-u"]
    });
    let c = alert.event.container.as_ref().expect("container section");
    assert_eq!(c.id, id);
    assert_eq!(c.runtime, "containerd");
    assert_eq!(c.name, "web");
    assert_eq!(c.image.as_ref().map(|i| i.name.as_str()), Some(image));
    assert!(
        alert.event.k8s.is_none(),
        "not a pod: {:?}",
        alert.event.k8s
    );
    // Once one event has the name, every later one has it (cached).
    let mine: Vec<&Event> = events(&picket)
        .into_iter()
        .filter(|e| in_container(e, &id))
        .collect();
    let first = mine
        .iter()
        .position(|e| e.container.as_ref().is_some_and(|c| !c.name.is_empty()))
        .expect("a named event");
    assert!(mine.len() > first + 1, "{}", picket.dump());
    for e in &mine[first..] {
        assert_eq!(
            e.container.as_ref().map(|c| c.name.as_str()),
            Some("web"),
            "{e:?}"
        );
    }
    drop(ctr);
    t.done();
}

/// kill-container and block-egress, placed by rules through the shipped
/// binary, on real runc containers of each layout. The containers share
/// a network namespace the test created, with a listener on its
/// loopback: a connect from the container works before the block and is
/// refused (EPERM) after it; a kill-container stops the container's task.
#[test]
fn kill_container_and_block_egress_on_every_layout() {
    let t = kernel_test!(kill_container_and_block_egress_on_every_layout);
    let layouts = [
        Layout::KubeCgroupfs,
        Layout::KubeSystemd,
        Layout::Docker,
        Layout::Podman,
    ];
    let tree = CgroupTree::new("act");
    let ctrd = Containerd::start();
    let netns = TestNetns::new("act");
    let (port, accepted) = netns.listen();
    let pod_uid = "4e5f6a7b-8c9d-4e0f-a1b2-c3d4e5f60718";
    let ids: Vec<String> = layouts.iter().map(|_| new_container_id()).collect();
    let rels: Vec<String> = layouts
        .iter()
        .zip(&ids)
        .map(|(l, id)| l.path(pod_uid, id))
        .collect();
    let dirs: Vec<_> = rels.iter().map(|r| tree.precreate(r)).collect();
    // Programs of their own (busybox copies), so the rules match nothing else.
    std::fs::create_dir_all(ctrd.rootfs.join("opt")).expect("mkdir opt");
    for p in ["exfil", "killme"] {
        std::fs::copy(
            ctrd.rootfs.join("bin/busybox"),
            ctrd.rootfs.join("opt").join(p),
        )
        .expect("copy");
    }
    let work = tempfile::tempdir().expect("tempdir");
    let rules = work.path().join("act.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - id: rt-block\n    name: rt-block\n    description: real-runtime block\n    severity: critical\n    events: [exec]\n    condition: 'container.id exists and process.executable.path == \"/opt/exfil\"'\n    output: 'ran {process.command_line}'\n    tags: [T1041]\n    actions: [alert, block-egress]\n  - id: rt-killc\n    name: rt-killc\n    description: real-runtime kill-container\n    severity: critical\n    events: [exec]\n    condition: 'container.id exists and process.executable.path == \"/opt/killme\"'\n    output: 'ran {process.command_line}'\n    tags: [T1059]\n    actions: [alert, kill-container]\n",
    )
    .expect("rules");
    let config = work.path().join("picket.yaml");
    // This test's own pin and state directories, never the host's.
    let pins = PinDir::new("rt-actions");
    std::fs::write(
        &config,
        format!(
            "containment:\n  enabled: true\n  rate_limits: {{per_rule: null, per_namespace: null, global: null}}\n  pin_dir: {}\n  state_dir: {}\nruntimes: {{containerd_socket: '', docker_socket: '', podman_socket: ''}}\n",
            pins.0.display(),
            work.path().join("state").display()
        ),
    )
    .expect("config");
    let mut picket = PicketRun::start(RunOptions {
        rules: vec![rules],
        only_cgroups: dirs.clone(),
        extra_args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    });
    let net = format!("network:{}", netns.path());
    let running: Vec<_> = rels
        .iter()
        .zip(&ids)
        .map(|(rel, id)| {
            ctrd.run_with(
                id,
                &tree.cgroup_path(rel),
                &["--with-ns", &net],
                &["/bin/sleep", "1000"],
            )
        })
        .collect();
    let connect = format!("echo x | /bin/nc 127.0.0.1 {port}");
    for (i, ctr) in running.iter().enumerate() {
        let layout = layouts[i];
        let cg = cgroup_id(&dirs[i]);
        let audit_of = |picket: &mut PicketRun, action: &str| {
            let a = picket.wait_alert(&format!("{layout:?}'s {action} audit"), WAIT, |a| {
                a.rule.id == "containment-action"
                    && a.event
                        .containment
                        .as_ref()
                        .is_some_and(|c| c.action == action)
                    && in_container(&a.event, &ids[i])
            });
            a.event.containment.clone().expect("containment section")
        };

        // Before the block: the listener in the test's netns answers.
        let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
        let out = ctr.try_exec(&format!("c{i}"), &["/bin/sh", "-c", &connect]);
        assert!(out.status.success(), "{layout:?} before the block: {out:?}");
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            before + 1
        );

        let _ = ctr.try_exec(&format!("x{i}"), &["/opt/exfil"]);
        let alert = picket.wait_alert(&format!("{layout:?}'s rt-block"), WAIT, |a| {
            a.rule.id == "rt-block" && a.event.process.linux.cgroup_id == cg
        });
        assert!(in_container(&alert.event, &ids[i]), "{layout:?}");
        let c = audit_of(&mut picket, "block-egress");
        assert_eq!(
            (c.outcome.as_str(), c.rule_id.as_deref()),
            ("succeeded", Some("rt-block")),
            "{layout:?}: {c:?}"
        );
        let out = ctr.try_exec(&format!("b{i}"), &["/bin/sh", "-c", &connect]);
        assert!(
            !out.status.success(),
            "{layout:?} connected after the block"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Operation not permitted"),
            "{layout:?}: {stderr}"
        );
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            before + 1,
            "{layout:?}: the listener saw a connection after the block"
        );

        // kill-container: the container's task dies.
        let _ = ctr.try_exec(&format!("k{i}"), &["/opt/killme"]);
        let c = audit_of(&mut picket, "kill-container");
        assert_eq!(
            (c.outcome.as_str(), c.rule_id.as_deref()),
            ("succeeded", Some("rt-killc")),
            "{layout:?}: {c:?}"
        );
        ctr.wait_stopped(WAIT);
        assert!(
            !std::path::Path::new(&format!("/proc/{}", ctr.init_pid)).exists()
                || std::fs::read_to_string(format!("/proc/{}/stat", ctr.init_pid))
                    .is_ok_and(|s| s.contains(") Z ")),
            "{layout:?}: the container's init {} still runs",
            ctr.init_pid
        );
    }
    drop(running);
    drop(picket);
    t.done();
}

/// Docker on a plain host: a real `dockerd` (private data root and
/// socket) runs a container from an imported image; `container.name`,
/// `container.image.name` and the runtime come from Docker's HTTP API, and
/// `docker exec` (runc exec under Docker's containerd) raises `exec-into-pod`.
#[test]
fn host_mode_name_and_image_from_the_docker_api() {
    let t = kernel_test!(host_mode_name_and_image_from_the_docker_api);
    let tree = CgroupTree::new("docker");
    let dockerd = Dockerd::start();
    let image = "picket/busybox:test";
    import_rootfs(|rootfs| dockerd.import(rootfs, image));
    host_mode_name_and_image(
        &tree,
        &HostRuntime {
            name: "docker",
            parent: "docker",
            leaf: |id| format!("docker/{id}"),
            socket_key: "docker_socket",
            socket: &dockerd.socket,
            image,
            image_seen: image,
            create: &|name, parent, image, argv| dockerd.create(name, parent, image, argv),
            cli: &|args| dockerd.docker_ok(args),
        },
    );
    drop(dockerd);
    t.done();
}

/// podman on a plain host: a real `podman` (private storage, cgroupfs
/// manager, runc) runs a container from an imported image in its cgroupfs
/// layout (`<parent>/libpod-<id>`); `container.name`, `container.image.name`
/// and the runtime come from podman's Docker-compatible API (`podman system
/// service`), and `podman exec` (runc exec under conmon) raises
/// `exec-into-pod`.
#[test]
fn host_mode_name_and_image_from_the_podman_api() {
    let t = kernel_test!(host_mode_name_and_image_from_the_podman_api);
    let tree = CgroupTree::new("podman");
    let podman = Podman::start();
    let image = "picket/busybox:test";
    import_rootfs(|rootfs| podman.import(rootfs, image));
    host_mode_name_and_image(
        &tree,
        &HostRuntime {
            name: "podman",
            parent: "libpod_parent",
            leaf: |id| format!("libpod_parent/libpod-{id}"),
            socket_key: "podman_socket",
            socket: &podman.socket,
            image,
            // podman names imported images in the `localhost/` registry.
            image_seen: "localhost/picket/busybox:test",
            create: &|name, parent, image, argv| podman.create(name, parent, image, argv),
            cli: &|args| podman.podman_ok(args),
        },
    );
    drop(podman);
    t.done();
}

/// `create NAME --cgroup-parent PARENT IMAGE ARGV...`, returning the id.
type CreateFn<'a> = &'a dyn Fn(&str, &str, &str, &[&str]) -> String;

/// What differs between the Docker-API runtimes in the host-mode test.
struct HostRuntime<'a> {
    /// `container.runtime`, and the CLI's name.
    name: &'static str,
    /// The cgroup parent the container is created under, in the test's tree.
    parent: &'static str,
    /// The container's own cgroup in the tree, from its id.
    leaf: fn(&str) -> String,
    /// The `runtimes:` configuration key of its socket.
    socket_key: &'static str,
    socket: &'a Path,
    /// The image as imported, and as the runtime's API names it.
    image: &'static str,
    image_seen: &'static str,
    /// Creates the container (see [`CreateFn`]).
    create: CreateFn<'a>,
    /// The CLI with these arguments, returning its trimmed stdout.
    cli: &'a dyn Fn(&[&str]) -> String,
}

/// A busybox rootfs in a temp dir, handed to `import`.
fn import_rootfs(import: impl FnOnce(&Path)) {
    let rootfs = tempfile::tempdir().expect("tempdir");
    build_rootfs(rootfs.path());
    import(rootfs.path());
}

/// The host-mode test body shared by Docker and podman: a container named
/// `web` gets its name, image and runtime from the runtime's API on an
/// event and on the `exec-into-pod` alert of an exec into it, and every
/// other runtime socket is configured off.
fn host_mode_name_and_image(tree: &CgroupTree, rt: &HostRuntime<'_>) {
    let id = (rt.create)(
        "web",
        &tree.cgroup_path(rt.parent),
        rt.image,
        &[
            "/bin/sh",
            "-c",
            "while true; do /bin/echo tick >/dev/null; /bin/sleep 0.2; done",
        ],
    );
    assert_eq!(id.len(), 64, "{id}");
    let dir = tree.precreate(&(rt.leaf)(&id));
    let work = tempfile::tempdir().expect("tempdir");
    let config = work.path().join("picket.yaml");
    let mut runtimes = String::from("runtimes:\n");
    for key in ["containerd_socket", "docker_socket", "podman_socket"] {
        let value = if key == rt.socket_key {
            rt.socket.display().to_string()
        } else {
            "''".to_string()
        };
        runtimes.push_str(&format!("  {key}: {value}\n"));
    }
    std::fs::write(&config, runtimes).expect("config");
    let mut picket = PicketRun::start(RunOptions {
        only_cgroups: vec![dir],
        events: true,
        extra_args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    });
    (rt.cli)(&["start", "web"]);
    let named = picket.wait_event("an event with the container's name", WAIT, |e| {
        in_container(e, &id) && e.container.as_ref().is_some_and(|c| !c.name.is_empty())
    });
    let c = named.container.as_ref().expect("container");
    assert_eq!(
        (c.name.as_str(), c.runtime.as_str()),
        ("web", rt.name),
        "{c:?}"
    );
    assert_eq!(
        c.image.as_ref().map(|i| i.name.as_str()),
        Some(rt.image_seen)
    );

    let out = (rt.cli)(&["exec", "web", "/bin/id", "-u"]);
    assert_eq!(out, "0");
    let alert = picket.wait_alert("exec-into-pod alert", WAIT, |a| {
        a.rule.id == "exec-into-pod" && a.event.process.command_args == ["/bin/id", "-u"]
    });
    let c = alert.event.container.as_ref().expect("container section");
    assert_eq!(
        (c.id.as_str(), c.name.as_str(), c.runtime.as_str()),
        (id.as_str(), "web", rt.name)
    );
    assert_eq!(
        c.image.as_ref().map(|i| i.name.as_str()),
        Some(rt.image_seen)
    );
    drop(picket);
}
