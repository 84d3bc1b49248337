//! Process limits the delivery stack depends on.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns
/// `(old soft, new soft)`.
///
/// Why: the default soft limit (1,024) is low enough that a burst of API
/// connections exhausts it, and then the sinks cannot open segment or
/// cursor files. The hard limit is what the administrator (or the container
/// runtime) allowed; the gRPC connection cap keeps clients well below it.
pub fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; raising soft up to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur))
}
