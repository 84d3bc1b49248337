//! tracefs must be mounted for tracepoint attachment (aya reads event ids
//! from it). Many hosts, including minimal VMs, do not mount it at boot.

use std::{io, path::Path};

/// Where tracefs is (or was made) available.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Returns `Ok(true)` if tracefs was already mounted, `Ok(false)` if Picket
/// mounted it now, or the mount error.
pub fn ensure_mounted() -> io::Result<bool> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(true);
    }
    let src = c"tracefs";
    let target = c"/sys/kernel/tracing";
    // SAFETY: plain mount(2) with valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    tracing::info!(path = TRACEFS, "mounted tracefs");
    Ok(false)
}

/// Whether the tracepoint `category:name` exists on this kernel.
pub fn tracepoint_exists(category: &str, name: &str) -> bool {
    Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .join("id")
        .exists()
}
