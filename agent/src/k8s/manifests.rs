//! `picket manifests`: the Kubernetes deployment (the single source of
//! `deploy/*.yaml`).
//!
//! Written as YAML text rather than serialized k8s-openapi objects because
//! the manifests carry comments that explain each privilege (why each
//! capability, why each host mount); the YAML is validated against the
//! Kubernetes OpenAPI schemas by `deploy/validate.sh`, and a test keeps
//! `deploy/` identical to this output.
//!
//! Regenerate `deploy/` after changing this file or `rules/`:
//! `deploy/regenerate.sh` (runs `picket manifests` twice, see there).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use tracing::error;

/// The rules directory of a checkout, relative to the working directory
/// (not the build machine's absolute path, which `--help` would show).
const DEFAULT_RULES_DIR: &str = "rules";
const DEFAULT_IMAGE: &str = concat!("ghcr.io/picket-dev/picket:", env!("CARGO_PKG_VERSION"));

/// `picket manifests` options.
#[derive(Clone, Debug, clap::Args)]
pub struct ManifestsArgs {
    /// Namespace the agent runs in.
    #[arg(long, default_value = "picket")]
    pub namespace: String,
    /// Agent container image.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// Also grant the containment rights (patch/delete pods, NetworkPolicies,
    /// Events) and the capabilities containment needs.
    #[arg(long)]
    pub containment: bool,
    /// Directory whose `*.yaml` rule files go into the rules ConfigMap.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_RULES_DIR)]
    pub rules_dir: PathBuf,
}

/// Why the manifests could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read rules directory {path}: {source}")]
    RulesDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read rule file {path}: {source}")]
    RuleFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: &'static str,
    },
}

/// Entry point of `picket manifests`: prints the manifests to stdout.
pub fn run(args: ManifestsArgs) -> ExitCode {
    match render(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(error = %e, "cannot generate the manifests");
            ExitCode::FAILURE
        }
    }
}

/// Rule files (`*.yaml`, sorted by name) with their contents.
fn rule_files(dir: &Path) -> Result<Vec<(String, String)>, ManifestError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ManifestError::RulesDir {
        path: dir.into(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ManifestError::RulesDir {
            path: dir.into(),
            source,
        })?;
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if !name.ends_with(".yaml") || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::RuleFile {
            path: path.clone(),
            source,
        })?;
        files.push((name, text));
    }
    files.sort();
    Ok(files)
}

/// A DNS-1123 label (namespace names).
fn check_namespace(ns: &str) -> Result<(), ManifestError> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Invalid {
            what: "namespace",
            value: ns.into(),
            why: "must be a DNS-1123 label",
        })
    }
}

fn check_image(image: &str) -> Result<(), ManifestError> {
    if image.is_empty()
        || image
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c.is_control())
    {
        return Err(ManifestError::Invalid {
            what: "image",
            value: image.into(),
            why: "must be an image reference",
        });
    }
    Ok(())
}

/// A YAML scalar for `text` at `indent` (a block literal when it is safe and
/// readable, a JSON-style double-quoted string otherwise, which YAML accepts).
fn yaml_text(text: &str, indent: usize) -> String {
    let block_safe = !text.is_empty()
        && !text.starts_with([' ', '\n'])
        && text.lines().all(|l| {
            !l.ends_with([' ', '\t']) && !l.starts_with('\t') && !l.chars().any(|c| c.is_control())
        });
    if !block_safe {
        return serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into());
    }
    let trailing = text.len() - text.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let pad = " ".repeat(indent);
    let mut out = format!("|{chomp}\n");
    for line in text.trim_end_matches('\n').split('\n') {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{pad}{line}");
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    // The caller ends the value with its own newline.
    out.pop();
    out
}

/// All manifests as one multi-document YAML stream.
pub fn render(args: &ManifestsArgs) -> Result<String, ManifestError> {
    check_namespace(&args.namespace)?;
    check_image(&args.image)?;
    let rules = rule_files(&args.rules_dir)?;
    let mut docs: Vec<String> = vec![
        NAMESPACE.into(),
        SERVICE_ACCOUNT.into(),
        CLUSTER_ROLE.into(),
        CLUSTER_ROLE_BINDING.into(),
    ];
    if args.containment {
        docs.push(CONTAINMENT_ROLE.into());
        docs.push(CONTAINMENT_BINDING.into());
        docs.push(NODE_SCOPE_POLICY.into());
        docs.push(NODE_SCOPE_BINDING.into());
    }
    let mut rules_doc = String::from(RULES_CONFIG_MAP);
    if rules.is_empty() {
        rules_doc.push_str("data: {}\n");
    } else {
        rules_doc.push_str("data:\n");
        for (name, text) in &rules {
            let _ = writeln!(rules_doc, "  {name}: {}", yaml_text(text, 4));
        }
    }
    docs.push(rules_doc);
    docs.push(CONFIG_MAP.replace(
        "{{CONTAINMENT}}",
        if args.containment { "true" } else { "false" },
    ));
    docs.push(SERVICE.into());
    let extra_caps = if args.containment {
        CONTAINMENT_CAPS
    } else {
        ""
    };
    docs.push(
        DAEMON_SET
            .replace("{{IMAGE}}", &args.image)
            .replace("{{CONTAINMENT_CAPS}}\n", extra_caps),
    );
    let mut out = String::from(HEADER);
    if args.containment {
        out.push_str("# Containment is ON: the agent may isolate and delete pods (see picket-containment).\n");
    }
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&doc.replace("{{NAMESPACE}}", &args.namespace));
    }
    Ok(out)
}

const HEADER: &str = "\
# Picket: eBPF runtime security agent, one pod per node.
# Generated by `picket manifests`; do not edit by hand (deploy/regenerate.sh).
";

const NAMESPACE: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: {{NAMESPACE}}
  labels:
    app.kubernetes.io/name: picket
    # hostPID and host mounts are 'privileged' in Pod Security terms.
    pod-security.kubernetes.io/enforce: privileged
";

const SERVICE_ACCOUNT: &str = "\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: picket
  namespace: {{NAMESPACE}}
  labels:
    app.kubernetes.io/name: picket
";

const CLUSTER_ROLE: &str = "\
# Read-only access for pod metadata enrichment.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: picket
  labels:
    app.kubernetes.io/name: picket
rules:
  # Pods of this node (the agent watches with spec.nodeName=<node>).
  - apiGroups: [\"\"]
    resources: [pods]
    verbs: [get, list, watch]
  # Namespace labels, for rule conditions and exceptions.
  - apiGroups: [\"\"]
    resources: [namespaces]
    verbs: [get, list, watch]
  # One GET per ReplicaSet/Job (cached) to name the Deployment/CronJob.
  - apiGroups: [apps]
    resources: [replicasets]
    verbs: [get]
  - apiGroups: [batch]
    resources: [jobs]
    verbs: [get]
";

const CLUSTER_ROLE_BINDING: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: picket
  labels:
    app.kubernetes.io/name: picket
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: picket
subjects:
  - kind: ServiceAccount
    name: picket
    namespace: {{NAMESPACE}}
";

const CONTAINMENT_ROLE: &str = "\
# Containment rights: only emitted (and bound) with `picket manifests --containment`.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: picket-containment
  labels:
    app.kubernetes.io/name: picket
rules:
  # Label a pod as quarantined, or delete it.
  - apiGroups: [\"\"]
    resources: [pods]
    verbs: [patch, delete]
  # The deny-all NetworkPolicy that isolates quarantined pods.
  - apiGroups: [networking.k8s.io]
    resources: [networkpolicies]
    verbs: [get, create]
  # An Event on the pod records every action.
  - apiGroups: [\"\"]
    resources: [events]
    verbs: [create]
";

const CONTAINMENT_BINDING: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: picket-containment
  labels:
    app.kubernetes.io/name: picket
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: picket-containment
subjects:
  - kind: ServiceAccount
    name: picket
    namespace: {{NAMESPACE}}
";

/// Restricts the containment rights to the agent's own node: RBAC cannot
/// say "pods on my node", so without this one compromised node's agent
/// could delete or relabel every pod of the cluster. The kubelet-bound
/// service-account token carries the node name in the request's user extra
/// (Kubernetes 1.30+, `ServiceAccountTokenPodNodeInfo`); the policy compares
/// it with the pod's `spec.nodeName`. The agent never evicts: evictions by
/// it are refused outright (their object is not the pod).
const NODE_SCOPE_POLICY: &str = "\
# The agent may patch or delete only pods of its own node (Kubernetes 1.30+;
# older clusters: see docs/containment.md, \"Node scoping\").
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: picket-containment-node-scope
  labels:
    app.kubernetes.io/name: picket
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [\"\"]
        apiVersions: [v1]
        operations: [CREATE, UPDATE, DELETE]
        resources: [pods, pods/eviction]
  matchConditions:
    - name: picket-service-account
      expression: \"request.userInfo.username == 'system:serviceaccount:{{NAMESPACE}}:picket'\"
  variables:
    - name: pod
      expression: \"request.operation == 'DELETE' ? oldObject : object\"
    - name: callerNode
      expression: \"'authentication.kubernetes.io/node-name' in request.userInfo.extra ? request.userInfo.extra['authentication.kubernetes.io/node-name'] : []\"
  validations:
    - expression: \"request.subResource != 'eviction' && variables.callerNode.size() == 1 && has(variables.pod.spec.nodeName) && variables.pod.spec.nodeName == variables.callerNode[0]\"
      message: picket may patch or delete only pods of the node its token is bound to
      reason: Forbidden
";

const NODE_SCOPE_BINDING: &str = "\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: picket-containment-node-scope
  labels:
    app.kubernetes.io/name: picket
spec:
  policyName: picket-containment-node-scope
  validationActions: [Deny]
";

const RULES_CONFIG_MAP: &str = "\
# The default detection rules (rules/*.yaml at generation time).
apiVersion: v1
kind: ConfigMap
metadata:
  name: picket-rules
  namespace: {{NAMESPACE}}
  labels:
    app.kubernetes.io/name: picket
";

const CONFIG_MAP: &str = "\
# Agent configuration: environment variables read by `picket run` flags, and
# the agent configuration file.
apiVersion: v1
kind: ConfigMap
metadata:
  name: picket-config
  namespace: {{NAMESPACE}}
  labels:
    app.kubernetes.io/name: picket
data:
  PICKET_LOG: info
  # Pod metadata: on (the API server is required; outages are retried).
  PICKET_KUBERNETES: \"on\"
  # Deleted pods stay resolvable this long (events of short-lived pods).
  PICKET_K8S_TOMBSTONE_TTL: 5m
  # Events of pods not cached yet wait this long for the pod watch.
  PICKET_K8S_METADATA_WAIT: 2s
  # Upper bound of cached pods (live + deleted).
  PICKET_K8S_MAX_PODS: \"10000\"
  picket.yaml: |
    delivery:
      # /metrics, /healthz, /readyz (probes and Prometheus).
      http:
        listen: 0.0.0.0:9090
      # gRPC alert/event stream, mutual TLS from the picket-grpc-tls Secret.
      grpc:
        listen: 0.0.0.0:50051
        tls:
          cert: /etc/picket/tls/tls.crt
          key: /etc/picket/tls/tls.key
          client_ca: /etc/picket/tls/ca.crt
      # Alerts as JSON lines on stdout (kubectl logs).
      jsonl:
        - name: stdout
          path: \"-\"
    containment:
      enabled: {{CONTAINMENT}}
";

const SERVICE: &str = "\
# gRPC and metrics of the agent on the caller's node (internalTrafficPolicy: Local).
apiVersion: v1
kind: Service
metadata:
  name: picket
  namespace: {{NAMESPACE}}
  labels:
    app.kubernetes.io/name: picket
spec:
  selector:
    app.kubernetes.io/name: picket
  internalTrafficPolicy: Local
  ports:
    - name: grpc
      port: 50051
      targetPort: grpc
      protocol: TCP
    - name: metrics
      port: 9090
      targetPort: metrics
      protocol: TCP
";

// (No `\` line continuation here: it would eat the first line's indentation.)
const CONTAINMENT_CAPS: &str =
    "                # Containment: attach cgroup/sock_addr programs (egress blocking).
                - NET_ADMIN
                # Containment: kill processes of any user from userspace.
                - KILL
";

const DAEMON_SET: &str = "\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: picket
  namespace: {{NAMESPACE}}
  labels:
    app.kubernetes.io/name: picket
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: picket
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 10%
  template:
    metadata:
      labels:
        app.kubernetes.io/name: picket
    spec:
      serviceAccountName: picket
      # Node-critical: a security agent should be the last pod evicted.
      priorityClassName: system-node-critical
      # See every process of the node (process tree, /proc/<pid>): with the
      # host's pid namespace the container's own /proc is the node's, so no
      # hostPath mount of /proc is needed.
      hostPID: true
      # Run on every node, including tainted control-plane nodes.
      tolerations:
        - operator: Exists
      terminationGracePeriodSeconds: 30
      containers:
        - name: picket
          image: {{IMAGE}}
          imagePullPolicy: IfNotPresent
          args:
            - run
            - --config=/etc/picket/config/picket.yaml
            - --rules=/etc/picket/rules
            - --format=json
          env:
            # The pod watch only lists pods of this node.
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
          envFrom:
            - configMapRef:
                name: picket-config
          ports:
            - name: grpc
              containerPort: 50051
              protocol: TCP
            - name: metrics
              containerPort: 9090
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            initialDelaySeconds: 10
            periodSeconds: 10
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            periodSeconds: 5
            failureThreshold: 3
          resources:
            requests:
              cpu: 100m
              memory: 256Mi
            limits:
              cpu: \"1\"
              memory: 512Mi
          securityContext:
            # Capabilities are only effective for uid 0 in containers.
            runAsUser: 0
            privileged: false
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            # Runtime default seccomp/AppArmor profiles block bpf() and
            # perf_event_open() on several distributions.
            seccompProfile:
              type: Unconfined
            appArmorProfile:
              type: Unconfined
            capabilities:
              drop:
                - ALL
              add:
                # Load eBPF programs and create maps (kernel >= 5.8).
                - BPF
                # Attach tracepoints and read kernel memory from tracing
                # programs (bpf_probe_read_kernel), kernel >= 5.8.
                - PERFMON
                # Raise RLIMIT_MEMLOCK for maps on kernels before 5.11.
                - SYS_RESOURCE
                # Read /proc/<pid>/{exe,cwd,fd,ns} of processes of other users.
                - SYS_PTRACE
{{CONTAINMENT_CAPS}}
                # SYS_ADMIN is not needed on kernels >= 5.8 (BPF and PERFMON
                # replace it); add it only on older kernels.
          volumeMounts:
            # Kernel type information: field offsets for the programs.
            - name: btf
              mountPath: /sys/kernel/btf
              readOnly: true
            # Pinned maps survive agent restarts.
            - name: bpffs
              mountPath: /sys/fs/bpf
            # Tracepoint ids (events/<category>/<name>/id).
            - name: tracefs
              mountPath: /sys/kernel/tracing
              readOnly: true
            # The cgroup hierarchy: cgroup paths -> container and pod ids.
            - name: cgroup
              mountPath: /sys/fs/cgroup
              readOnly: true
            - name: rules
              mountPath: /etc/picket/rules
              readOnly: true
            - name: config
              mountPath: /etc/picket/config
              readOnly: true
            - name: grpc-tls
              mountPath: /etc/picket/tls
              readOnly: true
            # Delivery spool: alerts survive restarts and sink outages.
            - name: spool
              mountPath: /var/lib/picket
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: btf
          hostPath:
            path: /sys/kernel/btf
            type: Directory
        - name: bpffs
          hostPath:
            path: /sys/fs/bpf
            type: DirectoryOrCreate
        - name: tracefs
          hostPath:
            path: /sys/kernel/tracing
            type: Directory
        - name: cgroup
          hostPath:
            path: /sys/fs/cgroup
            type: Directory
        - name: rules
          configMap:
            name: picket-rules
        - name: config
          configMap:
            name: picket-config
            items:
              - key: picket.yaml
                path: picket.yaml
        - name: grpc-tls
          secret:
            secretName: picket-grpc-tls
            optional: true
        - name: spool
          hostPath:
            path: /var/lib/picket
            type: DirectoryOrCreate
        - name: tmp
          emptyDir:
            medium: Memory
            sizeLimit: 64Mi
";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(containment: bool) -> ManifestsArgs {
        ManifestsArgs {
            namespace: "picket".into(),
            image: DEFAULT_IMAGE.into(),
            containment,
            rules_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules")),
        }
    }

    fn deploy(name: &str) -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/");
        std::fs::read_to_string(format!("{path}{name}"))
            .unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
    }

    /// `deploy/` must be the output of `picket manifests`; regenerate with
    /// `deploy/regenerate.sh`.
    #[test]
    fn deploy_directory_is_in_sync() {
        let base = render(&args(false)).expect("render");
        assert!(
            base == deploy("picket.yaml"),
            "deploy/picket.yaml is stale: run deploy/regenerate.sh"
        );
        let with = render(&args(true)).expect("render");
        assert!(
            with == deploy("picket-containment.yaml"),
            "deploy/picket-containment.yaml is stale: run deploy/regenerate.sh"
        );
    }

    #[test]
    fn containment_rights_only_with_containment() {
        // Rule files may mention the same words: look at exact manifest lines.
        let cap = "\n                - NET_ADMIN\n";
        let base = render(&args(false)).expect("render");
        assert!(!base.contains("\n  name: picket-containment\n"));
        assert!(!base.contains(cap));
        assert!(base.contains("\n      enabled: false\n"));
        let with = render(&args(true)).expect("render");
        assert_eq!(
            with.matches("\n  name: picket-containment\n").count(),
            3,
            "role name, binding name, roleRef"
        );
        assert!(with.contains(cap) && with.contains("\n                - KILL\n"));
        assert!(with.contains("\n      enabled: true\n"));
        // Node scoping ships with the rights it restricts, never without.
        assert!(!base.contains("ValidatingAdmissionPolicy"));
        assert_eq!(
            with.matches("\nkind: ValidatingAdmissionPolicy\n").count(),
            1
        );
        assert_eq!(
            with.matches("\nkind: ValidatingAdmissionPolicyBinding\n")
                .count(),
            1
        );
        assert!(
            with.contains("request.userInfo.username == 'system:serviceaccount:picket:picket'")
        );
        assert!(with.contains("variables.pod.spec.nodeName == variables.callerNode[0]"));
    }

    #[test]
    fn options_are_applied_and_checked() {
        let mut a = args(false);
        a.namespace = "security".into();
        a.image = "registry.local/picket:dev".into();
        let out = render(&a).expect("render");
        assert!(out.contains("namespace: security\n"));
        assert!(!out.contains("namespace: picket\n"));
        assert!(out.contains("image: registry.local/picket:dev\n"));
        a.namespace = "Bad_NS".into();
        assert!(matches!(
            render(&a),
            Err(ManifestError::Invalid {
                what: "namespace",
                ..
            })
        ));
        a.namespace = "ok".into();
        a.image = "bad image".into();
        assert!(matches!(
            render(&a),
            Err(ManifestError::Invalid { what: "image", .. })
        ));
    }

    #[test]
    fn rules_become_config_map_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("b.yaml"),
            "- rule: b\n  condition: x\n\n  # gap\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("a.yaml"), " leading space\n").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
        let mut a = args(false);
        a.rules_dir = dir.path().into();
        let out = render(&a).expect("render");
        assert!(out.contains("data:\n  a.yaml: \" leading space\\n\"\n  b.yaml: |\n    - rule: b\n      condition: x\n\n      # gap\n---\n"), "{out}");
        assert!(!out.contains("ignored"));
    }

    #[test]
    fn block_scalars_keep_trailing_newlines() {
        assert_eq!(yaml_text("a\nb", 2), "|-\n  a\n  b");
        assert_eq!(yaml_text("a\n", 2), "|\n  a");
        assert_eq!(yaml_text("a\n\n", 2), "|+\n  a\n");
        assert_eq!(yaml_text("a \n", 2), "\"a \\n\"");
    }
}
