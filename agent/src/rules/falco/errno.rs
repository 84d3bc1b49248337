//! Falco's `evt.res`: `SUCCESS`, or the errno name of a failed syscall.
//!
//! Picket's sensors keep the raw return value (`syscall.result`, negative
//! errno on failure); Falco rules compare the name (`evt.res = EINPROGRESS`,
//! `evt.res startswith E`). The table is Linux's generic errno list
//! (`include/uapi/asm-generic/errno*.h`, the numbers of x86_64 and arm64).

/// Names of errno 1..=133 (index 0 is errno 1); empty for unused numbers.
const NAMES: [&str; 133] = [
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "ENXIO",
    "E2BIG",
    "ENOEXEC",
    "EBADF",
    "ECHILD",
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "ENOTBLK",
    "EBUSY",
    "EEXIST",
    "EXDEV",
    "ENODEV",
    "ENOTDIR",
    "EISDIR",
    "EINVAL",
    "ENFILE",
    "EMFILE",
    "ENOTTY",
    "ETXTBSY",
    "EFBIG",
    "ENOSPC",
    "ESPIPE",
    "EROFS",
    "EMLINK",
    "EPIPE",
    "EDOM",
    "ERANGE",
    "EDEADLK",
    "ENAMETOOLONG",
    "ENOLCK",
    "ENOSYS",
    "ENOTEMPTY",
    "ELOOP",
    "",
    "ENOMSG",
    "EIDRM",
    "ECHRNG",
    "EL2NSYNC",
    "EL3HLT",
    "EL3RST",
    "ELNRNG",
    "EUNATCH",
    "ENOCSI",
    "EL2HLT",
    "EBADE",
    "EBADR",
    "EXFULL",
    "ENOANO",
    "EBADRQC",
    "EBADSLT",
    "",
    "EBFONT",
    "ENOSTR",
    "ENODATA",
    "ETIME",
    "ENOSR",
    "ENONET",
    "ENOPKG",
    "EREMOTE",
    "ENOLINK",
    "EADV",
    "ESRMNT",
    "ECOMM",
    "EPROTO",
    "EMULTIHOP",
    "EDOTDOT",
    "EBADMSG",
    "EOVERFLOW",
    "ENOTUNIQ",
    "EBADFD",
    "EREMCHG",
    "ELIBACC",
    "ELIBBAD",
    "ELIBSCN",
    "ELIBMAX",
    "ELIBEXEC",
    "EILSEQ",
    "ERESTART",
    "ESTRPIPE",
    "EUSERS",
    "ENOTSOCK",
    "EDESTADDRREQ",
    "EMSGSIZE",
    "EPROTOTYPE",
    "ENOPROTOOPT",
    "EPROTONOSUPPORT",
    "ESOCKTNOSUPPORT",
    "EOPNOTSUPP",
    "EPFNOSUPPORT",
    "EAFNOSUPPORT",
    "EADDRINUSE",
    "EADDRNOTAVAIL",
    "ENETDOWN",
    "ENETUNREACH",
    "ENETRESET",
    "ECONNABORTED",
    "ECONNRESET",
    "ENOBUFS",
    "EISCONN",
    "ENOTCONN",
    "ESHUTDOWN",
    "ETOOMANYREFS",
    "ETIMEDOUT",
    "ECONNREFUSED",
    "EHOSTDOWN",
    "EHOSTUNREACH",
    "EALREADY",
    "EINPROGRESS",
    "ESTALE",
    "EUCLEAN",
    "ENOTNAM",
    "ENAVAIL",
    "EISNAM",
    "EREMOTEIO",
    "EDQUOT",
    "ENOMEDIUM",
    "EMEDIUMTYPE",
    "ECANCELED",
    "ENOKEY",
    "EKEYEXPIRED",
    "EKEYREVOKED",
    "EKEYREJECTED",
    "EOWNERDEAD",
    "ENOTRECOVERABLE",
    "ERFKILL",
    "EHWPOISON",
];

/// `evt.res` for a raw result: `SUCCESS` when `result >= 0`, else the errno
/// name (`ENOENT`), or `EUNKNOWN` for a number outside the table (kernel-
/// internal codes such as `ERESTARTSYS` never reach user space).
pub fn res(result: i64) -> &'static str {
    if result >= 0 {
        return "SUCCESS";
    }
    let n = result.unsigned_abs();
    usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| NAMES.get(i))
        .copied()
        .filter(|s| !s.is_empty())
        .unwrap_or("EUNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::res;

    #[test]
    fn names_of_results() {
        assert_eq!(res(0), "SUCCESS");
        assert_eq!(res(3), "SUCCESS");
        assert_eq!(res(-1), "EPERM");
        assert_eq!(res(-2), "ENOENT");
        assert_eq!(res(-13), "EACCES");
        assert_eq!(res(-36), "ENAMETOOLONG");
        assert_eq!(res(-111), "ECONNREFUSED");
        assert_eq!(res(-115), "EINPROGRESS");
        assert_eq!(res(-133), "EHWPOISON");
        assert_eq!(res(-41), "EUNKNOWN");
        assert_eq!(res(-512), "EUNKNOWN");
        assert_eq!(res(i64::MIN), "EUNKNOWN");
    }
}
