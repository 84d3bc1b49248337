//! `picket contain` and `picket release`: on-demand containment through the
//! node agent's gRPC API.

use std::{path::PathBuf, process::ExitCode};

use crate::delivery::{
    grpc::client::{ClientError, connect},
    proto::pb::{self, containment_service_client::ContainmentServiceClient},
    tls::ClientTls,
};

/// Connection options shared by `contain` and `release`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Agent address: `unix:/path` (default), `host:port` (mTLS) or `https://host:port`.
    #[arg(long, default_value = "unix:/run/picket/picket.sock")]
    pub server: String,
    /// CA certificate (PEM) that signed the agent's certificate.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM): containment requires mutual TLS on TCP.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Name to verify in the agent's certificate.
    #[arg(long)]
    pub tls_server_name: Option<String>,
}

/// The on-demand actions. Each also answers to the name records, alerts and
/// `picket actions` print (`isolate-pod`, `delete-pod`), so a name copied
/// from their output works here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CliAction {
    #[value(alias = "isolate-pod")]
    Isolate,
    #[value(alias = "delete-pod")]
    Delete,
    BlockEgress,
    KillContainer,
}

impl CliAction {
    pub fn wire(self) -> &'static str {
        match self {
            Self::Isolate => "isolate-pod",
            Self::Delete => "delete-pod",
            Self::BlockEgress => "block-egress",
            Self::KillContainer => "kill-container",
        }
    }
}

/// Releasable actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CliRelease {
    #[value(alias = "isolate-pod")]
    Isolate,
    BlockEgress,
}

/// Arguments of `picket contain`.
#[derive(Debug, Clone, clap::Args)]
pub struct ContainArgs {
    /// The pod, `NAMESPACE/NAME`.
    #[arg(long, value_parser = parse_pod)]
    pub pod: (String, String),
    #[arg(long, value_enum)]
    pub action: CliAction,
    /// Why (recorded in the audit record and the pod's Event).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Report what would be done, do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// delete: grace period in seconds (default: the agent's).
    #[arg(long)]
    pub grace_period: Option<u32>,
    /// block-egress: keep DNS open.
    #[arg(long)]
    pub allow_dns: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `picket release`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReleaseArgs {
    /// The pod, `NAMESPACE/NAME`.
    #[arg(long, value_parser = parse_pod)]
    pub pod: (String, String),
    /// Only this action (default: every releasable action).
    #[arg(long, value_enum)]
    pub action: Option<CliRelease>,
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `picket actions`.
#[derive(Debug, Clone, clap::Args)]
pub struct ActionsArgs {
    /// At most this many records, newest last (0 = the agent's default, 100).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `picket purge-containment`.
#[derive(Debug, Clone, clap::Args)]
pub struct PurgeArgs {
    /// The agent's configuration file (for `containment.pin_dir` and
    /// `containment.state_dir`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Overrides the pin directory of the configuration.
    #[arg(long)]
    pub pin_dir: Option<PathBuf>,
    /// Overrides the state directory of the configuration.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// `NAMESPACE/NAME`.
pub fn parse_pod(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.into(), name.into()))
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {s:?}")),
    }
}

impl ContainArgs {
    pub fn request(&self) -> pb::ContainRequest {
        pb::ContainRequest {
            pod: Some(pb::PodRef {
                namespace: self.pod.0.clone(),
                name: self.pod.1.clone(),
            }),
            action: self.action.wire().into(),
            reason: self.reason.clone(),
            dry_run: self.dry_run,
            grace_period_seconds: self.grace_period.unwrap_or(0),
            allow_dns: self.allow_dns,
        }
    }
}

impl ReleaseArgs {
    pub fn request(&self) -> pb::ReleaseRequest {
        pb::ReleaseRequest {
            pod: Some(pb::PodRef {
                namespace: self.pod.0.clone(),
                name: self.pod.1.clone(),
            }),
            action: match self.action {
                None => String::new(),
                Some(CliRelease::Isolate) => "isolate-pod".into(),
                Some(CliRelease::BlockEgress) => "block-egress".into(),
            },
            reason: self.reason.clone(),
            dry_run: self.dry_run,
        }
    }
}

async fn client(
    s: &ServerArgs,
) -> Result<ContainmentServiceClient<tonic::transport::Channel>, ClientError> {
    let tls = ClientTls {
        ca: s.ca.clone(),
        cert: s.cert.clone(),
        key: s.key.clone(),
        domain: s.tls_server_name.clone(),
    };
    // Never plaintext TCP: the agent refuses unauthenticated containment.
    Ok(ContainmentServiceClient::new(
        connect(&s.server, &tls, false).await?,
    ))
}

fn print(r: &pb::ActionResult) -> bool {
    let restored = r
        .record
        .as_ref()
        .and_then(|s| s.fields.get("restored"))
        .is_some_and(|v| v.kind == Some(prost_types::value::Kind::BoolValue(true)));
    println!(
        "{} {} {}{}: {}",
        r.id,
        r.action,
        r.outcome,
        if restored { " (restored)" } else { "" },
        r.message
    );
    matches!(r.outcome.as_str(), "succeeded" | "dry_run")
}

fn block_on<F: Future<Output = Result<bool, ClientError>>>(f: F) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("picket: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("picket: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `picket contain`: exit 0 on success or dry-run, 2 when refused/failed.
pub fn contain_main(args: ContainArgs) -> ExitCode {
    block_on(async move {
        let mut c = client(&args.server).await?;
        let resp = c.contain(args.request()).await?.into_inner();
        Ok(resp.result.as_ref().is_some_and(print))
    })
}

/// `picket release`.
pub fn release_main(args: ReleaseArgs) -> ExitCode {
    block_on(async move {
        let mut c = client(&args.server).await?;
        let resp = c.release(args.request()).await?.into_inner();
        if resp.results.is_empty() {
            println!("nothing to release on pod {}/{}", args.pod.0, args.pod.1);
        }
        // Print every result, then report whether all succeeded.
        let printed: Vec<bool> = resp.results.iter().map(print).collect();
        Ok(printed.into_iter().all(|ok| ok))
    })
}

/// `picket actions`: the agent's recent containment records (restored
/// ones, kept in force from an earlier agent, are marked `(restored)`).
pub fn actions_main(args: ActionsArgs) -> ExitCode {
    block_on(async move {
        let mut c = client(&args.server).await?;
        let resp = c
            .list_actions(pb::ListActionsRequest { limit: args.limit })
            .await?
            .into_inner();
        for r in &resp.results {
            print(r);
        }
        Ok(true)
    })
}

/// `picket purge-containment`: removes every pinned egress block and the
/// containment state of an agent instance (uninstall). Run it after the
/// agent is stopped: a running agent holds its blocks until it exits.
pub fn purge_main(args: PurgeArgs) -> ExitCode {
    let file = match &args.config {
        Some(p) => match crate::config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("picket: configuration: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => crate::config::FileConfig::default(),
    };
    let contain = match &file.containment {
        Some(v) => match super::ContainmentFileConfig::from_value(v) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("picket: configuration: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => super::ContainmentFileConfig::default(),
    };
    let mut cfg = contain.persist();
    if let Some(d) = args.pin_dir {
        cfg.pin_dir = d;
    }
    if let Some(d) = args.state_dir {
        cfg.state_dir = d;
    }
    match super::persist::purge(&cfg) {
        Ok(p) => {
            for pin in &p.pins {
                println!("unpinned {}", pin.display());
            }
            println!(
                "purged {}: {} pinned links removed, {} recorded blocks forgotten",
                cfg.pin_dir.display(),
                p.pins.len(),
                p.records
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("picket: purge: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        c: C,
    }

    #[derive(clap::Subcommand)]
    enum C {
        Contain(ContainArgs),
        Release(ReleaseArgs),
    }

    #[test]
    fn parses_contain_and_release() {
        let t = T::try_parse_from([
            "picket",
            "contain",
            "--pod",
            "shop/web-1",
            "--action",
            "block-egress",
            "--allow-dns",
            "--reason",
            "c2 beacon",
            "--dry-run",
        ])
        .unwrap();
        let C::Contain(a) = t.c else {
            panic!("contain")
        };
        let r = a.request();
        assert_eq!(
            r.pod,
            Some(pb::PodRef {
                namespace: "shop".into(),
                name: "web-1".into()
            })
        );
        assert_eq!(
            (
                r.action.as_str(),
                r.reason.as_str(),
                r.dry_run,
                r.allow_dns,
                r.grace_period_seconds
            ),
            ("block-egress", "c2 beacon", true, true, 0)
        );
        assert_eq!(a.server.server, "unix:/run/picket/picket.sock");
        let t = T::try_parse_from([
            "picket",
            "contain",
            "--pod",
            "shop/web-1",
            "--action",
            "delete",
            "--grace-period",
            "5",
        ])
        .unwrap();
        let C::Contain(a) = t.c else {
            panic!("contain")
        };
        assert_eq!(
            (
                a.request().action.as_str(),
                a.request().grace_period_seconds
            ),
            ("delete-pod", 5)
        );
        let t = T::try_parse_from([
            "picket",
            "release",
            "--pod",
            "shop/web-1",
            "--action",
            "isolate",
        ])
        .unwrap();
        let C::Release(a) = t.c else {
            panic!("release")
        };
        assert_eq!(a.request().action, "isolate-pod");
        // The names records and `picket actions` print work too.
        for (cmd, name, wire) in [
            ("release", "isolate-pod", "isolate-pod"),
            ("contain", "isolate-pod", "isolate-pod"),
            ("contain", "delete-pod", "delete-pod"),
        ] {
            let t = T::try_parse_from(["picket", cmd, "--pod", "shop/web-1", "--action", name])
                .unwrap();
            let action = match t.c {
                C::Contain(a) => a.request().action,
                C::Release(a) => a.request().action,
            };
            assert_eq!(action, wire);
        }
        assert!(
            T::try_parse_from(["picket", "contain", "--pod", "web-1", "--action", "isolate"])
                .is_err()
        );
        assert!(
            T::try_parse_from([
                "picket",
                "contain",
                "--pod",
                "a/b",
                "--action",
                "kill-process"
            ])
            .is_err()
        );
    }

    #[test]
    fn pod_refs() {
        assert_eq!(parse_pod("a/b"), Ok(("a".into(), "b".into())));
        assert!(
            parse_pod("/b").is_err() && parse_pod("a/").is_err() && parse_pod("a/b/c").is_err()
        );
    }
}
