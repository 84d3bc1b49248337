//! Files an exec's command line names, resolved against the exec's working
//! directory: the script a shell or interpreter runs (`sh x`, `python3
//! ./x.py`) and the files a downloader (curl, wget) will write (`curl -o x
//! URL`, `wget -P /opt URL`).
//!
//! Why from the command line: the kernel's `file_open` filter matches the
//! path *as passed* against the rules' prefixes, so a download to a
//! relative path (`curl -o x` in `/app`) or to a directory no rule watches
//! (`/app`, `/home`, `/opt`: watching them would send every module read of
//! the applications living there) never reaches user space as an open.
//! The downloader's own argv, read at its exec together with its working
//! directory (exact at that moment, before any `chdir`), names the file it
//! is about to write, wherever that is, at no kernel cost. The executed
//! file's path (`process.executable.path`) is resolved by the kernel, so
//! both sides of `download-and-execute` compare absolute, normalized paths.
//!
//! Everything here is bounded and total on hostile input: arguments are
//! bounded by the exec capture (16 arguments, 1 KiB) or `/proc`, each
//! resolved path by [`MAX_PATH`], the number of outputs by [`MAX_OUTPUTS`].

use crate::model::FileAccess;

/// Longest path resolved (the kernel's own `PATH_MAX`); longer arguments
/// are not paths a program could open in one call.
const MAX_PATH: usize = 4096;
/// At most this many download outputs per exec (one per URL with `-O`).
const MAX_OUTPUTS: usize = 16;

/// `arg` as an absolute, lexically normalized path: absolute arguments as
/// they are, relative ones joined to `cwd`. `None` for an empty argument,
/// one with a NUL or newline (a command string, not a path), one longer
/// than `PATH_MAX`, or a relative one when the working directory is
/// unknown.
pub fn resolve(cwd: &str, arg: &str) -> Option<String> {
    if arg.is_empty() || arg.len() > MAX_PATH || arg.contains(['\0', '\n']) {
        return None;
    }
    let joined;
    let path = if arg.starts_with('/') {
        arg
    } else {
        if !cwd.starts_with('/') {
            return None;
        }
        joined = format!("{}/{arg}", cwd.trim_end_matches('/'));
        &joined
    };
    Some(FileAccess::normalize(path).unwrap_or_else(|| path.to_string()))
}

/// Options after which a shell or interpreter runs no script file: the
/// program comes from the command line (`sh -c`, `perl -e`, `node -e`,
/// `ruby -e`, `php -r`) or is a module (`python -m`).
const INLINE_PROGRAM: &[&str] = &[
    "-c",
    "-e",
    "-E",
    "-m",
    "-r",
    "--eval",
    "--command",
    "--print",
];

/// The script a shell or interpreter command line runs: its first operand
/// (the first argument after `argv[0]` that is not an option; after `--`,
/// the next argument), resolved against `cwd`. `None` when the program is
/// given inline (`-c`, `-e`, `-m`, ... or a short-option cluster ending in
/// `c`, such as `sh -ec`), or there is no operand. Computed for every exec;
/// rules use it only with shells and interpreters, where the first operand
/// is the script. An option that takes a value (`python3 -W ignore x.py`)
/// makes its value look like the operand: such a script is not found.
pub fn script_path(args: &[String], cwd: &str) -> Option<String> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            return it.next().and_then(|a| resolve(cwd, a));
        }
        if a.starts_with('-') && a.len() > 1 {
            if INLINE_PROGRAM.contains(&a.as_str()) || (!a.starts_with("--") && a.ends_with('c')) {
                return None;
            }
            continue;
        }
        return resolve(cwd, a);
    }
    None
}

/// The file name curl `-O` and wget give a download: the last segment of
/// the URL's path (query and fragment removed). `None` when the URL has no
/// scheme (`host/path`, which wget accepts, is treated the same after the
/// host), or its path ends in `/`.
fn url_file_name(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split_once('/').map(|(_, p)| p)?;
    let path = path.split(['?', '#']).next().unwrap_or("");
    let name = path.rsplit('/').next().unwrap_or("");
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

/// curl's short options that take a value (so a cluster such as `-sSHx`
/// ends at them, and `-H 'X: y'` does not make `X: y` a URL).
const CURL_SHORT_WITH_VALUE: &str = "ACDEFHKPQTUXYbcdemortuwxyz";
/// wget's short options that take a value.
const WGET_SHORT_WITH_VALUE: &str = "ABDIOPQRTUXYabeilnortwy";

/// Where a downloader is told to write: `Out(path)`, a directory prefix
/// (`Dir`), or "name it after the URL" (`RemoteName`).
enum Opt<'a> {
    Out(&'a str),
    Dir(&'a str),
    RemoteName,
}

/// The files a curl or wget command line writes, resolved against `cwd`
/// (`tool` is the program's name: executable, argv[0] or busybox applet).
/// curl: `-o FILE`/`--output FILE` (also in a cluster, `-sSo FILE`,
/// `-oFILE`), `-O`/`--remote-name`/`--remote-name-all` (the URL's file
/// name), `--output-dir DIR`. wget: `-O FILE`/`--output-document=FILE`, else
/// the URL's file name (`index.html` for a directory URL) below `-P
/// DIR`/`--directory-prefix=DIR`. `-` (stdout) and `/dev/...` outputs other
/// than `/dev/shm` are skipped: `curl -o /dev/null` is a health check.
/// Output written by a shell redirection (`curl URL > x`) is not on the
/// command line and not found here.
pub fn download_outputs(tool: &str, args: &[String], cwd: &str) -> Vec<String> {
    let wget = match tool {
        "curl" => false,
        "wget" => true,
        _ => return Vec::new(),
    };
    let with_value = if wget {
        WGET_SHORT_WITH_VALUE
    } else {
        CURL_SHORT_WITH_VALUE
    };
    let mut opts = Vec::new();
    let mut urls = Vec::new();
    let mut it = args.iter().skip(1).map(String::as_str);
    while let Some(a) = it.next() {
        if let Some(long) = a.strip_prefix("--") {
            if long.is_empty() {
                urls.extend(it.by_ref());
                break;
            }
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let mut value = || inline.or_else(|| it.next());
            match (wget, name) {
                (false, "output") | (true, "output-document") => {
                    opts.extend(value().map(Opt::Out));
                }
                (false, "output-dir") | (true, "directory-prefix") => {
                    opts.extend(value().map(Opt::Dir));
                }
                (false, "remote-name" | "remote-name-all") => opts.push(Opt::RemoteName),
                _ => {}
            }
            continue;
        }
        let Some(cluster) = a.strip_prefix('-').filter(|c| !c.is_empty()) else {
            urls.push(a);
            continue;
        };
        for (i, c) in cluster.char_indices() {
            if !with_value.contains(c) {
                if c == 'O' && !wget {
                    opts.push(Opt::RemoteName);
                }
                continue;
            }
            let rest = &cluster[i + c.len_utf8()..];
            let value = if rest.is_empty() {
                it.next()
            } else {
                Some(rest)
            };
            match (wget, c) {
                (false, 'o') | (true, 'O') => opts.extend(value.map(Opt::Out)),
                (true, 'P') => opts.extend(value.map(Opt::Dir)),
                _ => {}
            }
            break;
        }
    }
    let dir = opts.iter().rev().find_map(|o| match o {
        Opt::Dir(d) => Some(*d),
        _ => None,
    });
    let base = match dir {
        Some(d) => resolve(cwd, d),
        None => Some(cwd.to_string()),
    };
    let mut names: Vec<String> = Vec::new();
    let explicit: Vec<&str> = opts
        .iter()
        .filter_map(|o| match o {
            Opt::Out(p) => Some(*p),
            _ => None,
        })
        .collect();
    let remote = opts.iter().any(|o| matches!(o, Opt::RemoteName));
    // curl -o names the file itself (not below --output-dir when absolute);
    // wget -O is relative to the working directory, whatever -P says.
    let out_base = if wget {
        cwd
    } else {
        base.as_deref().unwrap_or(cwd)
    };
    for p in &explicit {
        if *p != "-" {
            names.extend(resolve(out_base, p));
        }
    }
    if (remote || (wget && explicit.is_empty()))
        && let Some(base) = base.as_deref()
    {
        for u in &urls {
            let name = match url_file_name(u) {
                Some(n) => n,
                None if wget => "index.html",
                None => continue,
            };
            names.extend(resolve(base, name));
        }
    }
    names.retain(|p| !p.starts_with("/dev/") || p.starts_with("/dev/shm/"));
    names.sort();
    names.dedup();
    names.truncate(MAX_OUTPUTS);
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn resolves_relative_and_dotted_paths_against_the_working_directory() {
        assert_eq!(resolve("/app", "x").as_deref(), Some("/app/x"));
        assert_eq!(resolve("/app/", "./x").as_deref(), Some("/app/x"));
        assert_eq!(resolve("/app/sub", "../x").as_deref(), Some("/app/x"));
        assert_eq!(resolve("/", "x").as_deref(), Some("/x"));
        assert_eq!(resolve("/app", "/tmp//y").as_deref(), Some("/tmp/y"));
        assert_eq!(resolve("", "x"), None);
        assert_eq!(resolve("/app", ""), None);
        assert_eq!(resolve("/app", "a\nb"), None);
        assert_eq!(resolve("/app", &"a".repeat(5000)), None);
    }

    #[test]
    fn the_script_is_the_first_operand_unless_the_program_is_inline() {
        let s = |a: &[&str]| script_path(&args(a), "/w");
        assert_eq!(s(&["sh", "x"]).as_deref(), Some("/w/x"));
        assert_eq!(
            s(&["bash", "-x", "./x.sh", "arg"]).as_deref(),
            Some("/w/x.sh")
        );
        assert_eq!(
            s(&["python3", "-u", "/tmp/x.py"]).as_deref(),
            Some("/tmp/x.py")
        );
        assert_eq!(s(&["sh", "--", "-x"]).as_deref(), Some("/w/-x"));
        assert_eq!(s(&["sh", "-c", "./x"]), None);
        assert_eq!(s(&["sh", "-ec", "./x"]), None);
        assert_eq!(s(&["python3", "-m", "http.server"]), None);
        assert_eq!(s(&["perl", "-e", "print 1"]), None);
        assert_eq!(s(&["sh"]), None);
        assert_eq!(s(&[]), None);
    }

    #[test]
    fn curl_outputs() {
        let d = |a: &[&str]| download_outputs("curl", &args(a), "/app");
        assert_eq!(d(&["curl", "-o", "x", "http://h/p"]), ["/app/x"]);
        assert_eq!(d(&["curl", "-sSLo", "x", "http://h/p"]), ["/app/x"]);
        assert_eq!(d(&["curl", "-ox", "http://h/p"]), ["/app/x"]);
        assert_eq!(d(&["curl", "--output", "/opt/y", "http://h"]), ["/opt/y"]);
        assert_eq!(d(&["curl", "-O", "http://h/a/b.sh?x=1"]), ["/app/b.sh"]);
        assert_eq!(d(&["curl", "-sO", "https://h/b"]), ["/app/b"]);
        assert_eq!(
            d(&["curl", "--output-dir", "/home/u", "-O", "http://h/b"]),
            ["/home/u/b"]
        );
        // -H's value is not a URL; -o - is stdout; /dev/null is a probe.
        assert_eq!(
            d(&["curl", "-H", "X: http://h/z", "http://h/"]),
            Vec::<String>::new()
        );
        assert_eq!(d(&["curl", "-o", "-", "http://h/x"]), Vec::<String>::new());
        assert_eq!(
            d(&["curl", "-sf", "-o", "/dev/null", "http://h/x"]),
            Vec::<String>::new()
        );
        assert_eq!(
            d(&["curl", "-o", "/dev/shm/x", "http://h/x"]),
            ["/dev/shm/x"]
        );
        assert_eq!(d(&["curl", "http://h/x"]), Vec::<String>::new());
        assert_eq!(
            download_outputs("cat", &args(&["cat", "-o", "x"]), "/app"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn wget_outputs() {
        let d = |a: &[&str]| download_outputs("wget", &args(a), "/root");
        assert_eq!(d(&["wget", "http://h/a/x"]), ["/root/x"]);
        assert_eq!(d(&["wget", "-q", "http://h/"]), ["/root/index.html"]);
        assert_eq!(d(&["wget", "-qO", "y", "http://h/a/x"]), ["/root/y"]);
        assert_eq!(
            d(&["wget", "--output-document=/var/tmp/y", "http://h/x"]),
            ["/var/tmp/y"]
        );
        assert_eq!(d(&["wget", "-P", "/opt", "http://h/x"]), ["/opt/x"]);
        assert_eq!(
            d(&["wget", "--directory-prefix=dl", "http://h/x"]),
            ["/root/dl/x"]
        );
        assert_eq!(d(&["wget", "-O", "-", "http://h/x"]), Vec::<String>::new());
        assert_eq!(d(&["wget", "-o", "log", "http://h/x"]), ["/root/x"]);
    }
}
