//! systemd readiness through the sd_notify protocol: one datagram to `$NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to the service manager; `Ok(false)` when not run under one.
/// A socket name starting with `@` is in the abstract namespace.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(false) };
    use std::os::unix::ffi::OsStrExt;
    let addr = addr.as_bytes();
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = addr.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &a)?;
    } else {
        sock.send_to(state.as_bytes(), std::ffi::OsStr::from_bytes(addr))?;
    }
    Ok(true)
}

/// Tells the service manager the mount is live (and which process serves it).
pub fn ready(mountpoint: &std::path::Path) {
    let msg = format!("READY=1\nMAINPID={}\nSTATUS=serving {}", std::process::id(), mountpoint.display());
    match notify(&msg) {
        Ok(true) => log::debug!("readiness sent to the service manager"),
        Ok(false) => {}
        Err(e) => log::warn!("cannot notify the service manager: {e}"),
    }
}

/// Tells the service manager the daemon is shutting down.
pub fn stopping() {
    let _ = notify("STOPPING=1");
}
