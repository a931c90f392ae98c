//! `sendmmsg`/`recvmmsg` on the fast path's connected upstream sockets: one system call for the
//! queries of a client batch that go to one socket, and one for the answers queued on it, where
//! a `send`/`recv` each cost about as much kernel time as the rest of a forwarded query's work.
//! The sockets are connected, so no addresses: the kernel fills in and checks the peer.

use std::os::fd::RawFd;

use crate::recv_batch::RecvBatch;
pub use crate::recv_batch::BATCH;

/// Largest upstream datagram read.
const SIZE: usize = 4096;

/// The buffers one `recvmmsg` reads into, kept from call to call (no sources: the sockets are
/// connected).
pub struct RecvMany(RecvBatch);

impl Default for RecvMany {
    fn default() -> Self {
        RecvMany(RecvBatch::new(SIZE, false))
    }
}

impl RecvMany {
    /// Takes what is queued on `fd` now, up to [`BATCH`] datagrams, without waiting.
    pub fn recv(&mut self, fd: RawFd) -> std::io::Result<usize> {
        self.0.recv(fd, libc::MSG_DONTWAIT)
    }

    /// Datagram `i` of the last [`recv`](Self::recv) (cut at the buffer's size, as `recv`
    /// would cut it).
    pub fn get(&self, i: usize) -> &[u8] {
        self.0.data(i)
    }
}

/// What `sendmmsg` reads, kept from call to call.
#[derive(Default)]
pub struct SendMany {
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// The raw pointers are set and used within one `send_all` call; between calls they are stale
// and never read.
unsafe impl Send for SendMany {}

impl SendMany {
    /// Sends every datagram of `datagrams` on the connected socket `fd`, in as few `sendmmsg`
    /// calls as the kernel allows. Each one the kernel refused goes to `refused` by its index,
    /// with the error. An iterator, not a slice: the caller has no list of its own to build.
    pub fn send_all<'a>(
        &mut self,
        fd: RawFd,
        datagrams: impl IntoIterator<Item = &'a [u8]>,
        mut refused: impl FnMut(usize, std::io::Error),
    ) {
        let mut datagrams = datagrams.into_iter();
        let mut base = 0;
        loop {
            self.iovs.clear();
            self.hdrs.clear();
            for d in datagrams.by_ref().take(BATCH) {
                self.iovs.push(libc::iovec {
                    iov_base: d.as_ptr() as *mut libc::c_void,
                    iov_len: d.len(),
                });
            }
            if self.iovs.is_empty() {
                return;
            }
            for iov in &mut self.iovs {
                // SAFETY: all-zero is a valid mmsghdr (no address: the socket is connected);
                // the fields set point at live data.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                self.hdrs.push(h);
            }
            let mut sent = 0;
            while sent < self.hdrs.len() {
                // SAFETY: the headers point into `iovs` and `datagrams`, neither of which
                // changes during this call.
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.hdrs[sent..].as_mut_ptr(),
                        (self.hdrs.len() - sent) as libc::c_uint,
                        0,
                    )
                };
                if n <= 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    // The first datagram left failed (a full socket buffer, an ICMP error
                    // reported now): that one is refused, the rest are tried.
                    refused(base + sent, e);
                    sent += 1;
                } else {
                    sent += n as usize;
                }
            }
            base += self.hdrs.len();
        }
    }
}
