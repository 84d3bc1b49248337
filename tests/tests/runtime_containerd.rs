//! Real runtime, real kernel: containers started by a private containerd
//! with runc (see `picket_tests::containerd`), watched by the shipped
//! `picket run` with the default rules. Root only; they fail (never skip)
//! elsewhere.

use std::time::Duration;

use picket::model::{Event, EventKindName};
use picket_tests::{
    containerd::{CgroupTree, Containerd, Layout, new_container_id},
    kernel_test,
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

/// Needs the containment layer to recognise docker-/libpod- scopes as
/// containers (issue #16); fails until that lands.
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
    std::fs::write(
        &config,
        "containment:\n  enabled: true\n  rate_limits: {per_rule: null, per_namespace: null, global: null}\n",
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
