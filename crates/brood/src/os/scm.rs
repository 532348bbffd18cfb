//! Passing file descriptors over Unix sockets (`SCM_RIGHTS`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The most fds one message can carry (the kernel's `SCM_MAX_FD`).
pub(crate) const MAX_FDS: usize = 253;

/// u64 words of control buffer for MAX_FDS fds: CMSG_SPACE(253 * 4) is
/// 16 + 1016 = 1032 bytes on 64-bit Linux.
const CONTROL_WORDS: usize = 129;

fn space_for(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// Sends all of `buf` on a stream socket, with `fds` attached to its first
/// byte. Never raises SIGPIPE.
pub(crate) fn send_with_fds(sock: &impl AsRawFd, buf: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.is_empty() {
        return send_all(sock, buf);
    }
    if fds.len() > MAX_FDS || buf.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot pass {} fds in one message (at most {MAX_FDS})",
                fds.len()
            ),
        ));
    }
    let sent = sendmsg_fds(sock.as_raw_fd(), &[buf], fds, libc::MSG_NOSIGNAL)?;
    send_all(sock, &buf[sent..])
}

/// One `sendmsg` of `parts` (gathered), with `fds` attached as SCM_RIGHTS
/// when there are any; retries on EINTR and returns the bytes sent.
pub(crate) fn sendmsg_fds(
    sock: RawFd,
    parts: &[&[u8]],
    fds: &[RawFd],
    flags: i32,
) -> io::Result<usize> {
    const MAX_PARTS: usize = 4;
    assert!(
        parts.len() <= MAX_PARTS,
        "sendmsg_fds takes at most {MAX_PARTS} parts"
    );
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [empty; MAX_PARTS];
    for (slot, p) in iov.iter_mut().zip(parts) {
        *slot = libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        };
    }
    let space = if fds.is_empty() {
        0
    } else {
        space_for(fds.len())
    };
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = parts.len() as _;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds CMSG_SPACE(len * sizeof(int))
        // bytes, so the header and every fd fit.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                std::mem::size_of_val(fds),
            );
        }
    }
    loop {
        // SAFETY: `iov` points into `parts`, `control` is initialised; all
        // outlive the call.
        let n = unsafe { libc::sendmsg(sock, &msg, flags) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sends all of `buf` on a socket, retrying on EINTR, without SIGPIPE.
pub(crate) fn send_all(sock: &impl AsRawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// One `recvmsg`: reads up to `buf.len()` bytes, keeping any fds that came
/// along (close-on-exec). Returns 0 bytes at end of file.
pub(crate) fn recv_with_fds(
    sock: &impl AsRawFd,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    flags: i32,
) -> io::Result<usize> {
    let len = buf.len();
    // SAFETY: an initialised buffer is valid for writes of its length.
    unsafe { recv_raw_with_fds(sock, buf.as_mut_ptr(), len, fds, flags) }
}

/// [`recv_with_fds`] into raw memory (a `Vec`'s spare capacity, which need
/// not be initialised: the kernel only writes to it).
///
/// If the kernel had to drop file descriptors (`MSG_CTRUNC`: the control
/// buffer was too small, or this process is at its fd limit), the bytes
/// were read all the same and are lost to the stream: this returns an
/// error, and the caller must abandon the stream. Callers that cannot
/// afford that use [`recv_raw`], which reports the truncation beside the
/// byte count.
///
/// # Safety
///
/// `ptr` must be valid for writes of `len` bytes.
pub(crate) unsafe fn recv_raw_with_fds(
    sock: &impl AsRawFd,
    ptr: *mut u8,
    len: usize,
    fds: &mut Vec<OwnedFd>,
    flags: i32,
) -> io::Result<usize> {
    // SAFETY: the caller's promise, passed on.
    let got = unsafe { recv_raw(sock, ptr, len, fds, flags) }?;
    if got.fds_dropped {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file descriptors were dropped (control data truncated)",
        ));
    }
    Ok(got.bytes)
}

/// What one [`recv_raw`] got.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Bytes read (0 at end of file).
    pub(crate) bytes: usize,
    /// The kernel dropped file descriptors that came with these bytes
    /// (`MSG_CTRUNC`); those in `fds` are the ones that did arrive.
    pub(crate) fds_dropped: bool,
}

/// One `recvmsg` into raw memory, keeping any fds that came along
/// (close-on-exec), and saying whether some were dropped. The bytes are
/// always the caller's, truncation or not.
///
/// # Safety
///
/// `ptr` must be valid for writes of `len` bytes.
pub(crate) unsafe fn recv_raw(
    sock: &impl AsRawFd,
    ptr: *mut u8,
    len: usize,
    fds: &mut Vec<OwnedFd>,
    flags: i32,
) -> io::Result<Received> {
    // On the stack: this runs for every receive on a connection.
    let mut control = [0u64; CONTROL_WORDS];
    let space = (CONTROL_WORDS * 8).min(space_for(MAX_FDS));
    let mut iov = libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    };
    // SAFETY: all-zero is a valid empty msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: `iov` and `control` are valid for writes of their lengths.
        let n =
            unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC | flags) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    // SAFETY: walking the control messages recvmsg filled in; each
    // SCM_RIGHTS payload holds fds now owned by this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for k in 0..bytes / std::mem::size_of::<RawFd>() {
                    let mut raw: RawFd = -1;
                    std::ptr::copy_nonoverlapping(
                        data.add(k * std::mem::size_of::<RawFd>()),
                        (&mut raw as *mut RawFd).cast::<u8>(),
                        std::mem::size_of::<RawFd>(),
                    );
                    if raw >= 0 {
                        fds.push(OwnedFd::from_raw_fd(raw));
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Received {
        bytes: n,
        fds_dropped: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// Shuts a socket down in direction `how` (`SHUT_RD`, `SHUT_WR`,
/// `SHUT_RDWR`); the error of a socket already shut or gone is ignored.
pub(crate) fn shutdown(sock: &impl AsRawFd, how: libc::c_int) {
    // SAFETY: shutdown(2) on a borrowed fd touches no memory.
    unsafe { libc::shutdown(sock.as_raw_fd(), how) };
}

/// A socket's type and address family (`SO_TYPE`, `SO_DOMAIN`); an fd that
/// is not a socket gives `ENOTSOCK`.
pub(crate) fn socket_kind(sock: &impl AsRawFd) -> io::Result<(libc::c_int, libc::c_int)> {
    let option = |name: libc::c_int| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for writes for the call.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(value)
    };
    Ok((option(libc::SO_TYPE)?, option(libc::SO_DOMAIN)?))
}

/// Fills `buf` from a stream socket, collecting the fds that come along.
pub(crate) fn recv_exact_with_fds(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Vec<OwnedFd>> {
    let mut fds = Vec::new();
    let mut filled = 0;
    while filled < buf.len() {
        let n = recv_with_fds(sock, &mut buf[filled..], &mut fds, 0)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection",
            ));
        }
        filled += n;
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_control_buffer_fits_the_most_fds() {
        assert!(super::CONTROL_WORDS * 8 >= super::space_for(super::MAX_FDS));
    }
}
