//! Options of peer sockets: buffer sizes and the acknowledgement timeout.

/// Sets SO_SNDBUF and SO_RCVBUF of `fd` to `bytes` (0: leaves them). The
/// kernel caps them at its maxima; a cap below `bytes` is logged once.
pub(crate) fn set_socket_buffers(fd: std::os::fd::RawFd, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let got = apply_socket_buffers(fd, bytes);
    // Linux caps SO_SNDBUF / SO_RCVBUF at net.core.wmem_max / rmem_max
    // (then doubles what it keeps): say so once rather than run silently
    // with less than the setting asks.
    static WARNED: std::sync::Once = std::sync::Once::new();
    if got.0 < bytes || got.1 < bytes {
        WARNED.call_once(|| {
            tracing::warn!(
                socket_buffer_bytes = bytes,
                send = got.0,
                receive = got.1,
                "the kernel caps peer socket buffers below socket_buffer_bytes \
                 (raise net.core.wmem_max / net.core.rmem_max)"
            )
        });
    }
}

/// Sets `TCP_USER_TIMEOUT` on `fd` to `ms` (see
/// [`TransportConfig::peer_ack_timeout_ms`](crate::transport::TransportConfig::peer_ack_timeout_ms)); 0 leaves the kernel's.
pub(crate) fn set_ack_timeout(fd: std::os::fd::RawFd, ms: u64) -> std::io::Result<()> {
    if ms == 0 {
        return Ok(());
    }
    let v = ms.min(u32::MAX as u64) as libc::c_uint;
    // SAFETY: `fd` is an open TCP socket; the option value is a c_uint
    // passed with its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            &v as *const libc::c_uint as *const libc::c_void,
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets SO_SNDBUF and SO_RCVBUF to `bytes`; the sizes the kernel grants
/// (what it reports, halved: Linux doubles the value for bookkeeping).
fn apply_socket_buffers(fd: std::os::fd::RawFd, bytes: usize) -> (usize, usize) {
    let v = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    let mut got = [0usize; 2];
    for (i, opt) in [libc::SO_SNDBUF, libc::SO_RCVBUF].into_iter().enumerate() {
        let mut out: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: setsockopt / getsockopt on a socket we own, with a valid
        // int option and its length.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &mut out as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            );
        }
        got[i] = (out.max(0) as usize) / 2;
    }
    (got[0], got[1])
}

#[cfg(test)]
mod socket_buffer_tests {
    use std::os::fd::AsRawFd;

    /// `socket_buffer_bytes` reaches the socket: both buffers are what the
    /// setting asks (64 KiB is under any kernel's default cap), not the
    /// kernel's autotuned defaults.
    #[test]
    fn socket_buffer_bytes_sets_both_buffers() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (snd, rcv) = super::apply_socket_buffers(s.as_raw_fd(), 64 << 10);
        assert_eq!((snd, rcv), (64 << 10, 64 << 10));
        let (snd, rcv) = super::apply_socket_buffers(s.as_raw_fd(), 96 << 10);
        assert_eq!((snd, rcv), (96 << 10, 96 << 10));
    }
}

#[cfg(test)]
mod ack_timeout_tests {
    use super::*;
    use crate::transport::TransportConfig;
    use std::os::fd::AsRawFd;

    /// The option reaches the socket, and the setting's range is checked.
    #[test]
    fn peer_ack_timeout_is_set_on_the_socket_and_bounded() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        set_ack_timeout(s.as_raw_fd(), 2_000).unwrap();
        let mut v: libc::c_uint = 0;
        let mut len = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
        // SAFETY: reading a c_uint option of an open socket into `v`.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                &mut v as *mut libc::c_uint as *mut libc::c_void,
                &mut len,
            )
        };
        assert_eq!((r, v), (0, 2_000));
        let cfg = |ms| TransportConfig {
            peer_ack_timeout_ms: ms,
            ..Default::default()
        };
        assert!(cfg(0).validate().is_ok() && cfg(100).validate().is_ok());
        let e = cfg(50).validate().unwrap_err().to_string();
        assert!(e.contains("peer_ack_timeout_ms = 50"), "{e}");
    }
}
