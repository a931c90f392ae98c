//! Buffers for `recvmmsg`: one system call reads a batch of datagrams, which under load costs
//! less than the rest of a query's work put together. Shared by the UDP listener (clients'
//! queries, with their sources) and the UDP fast path's upstream sockets (connected: no
//! source to read).

use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::{SockAddr, SockAddrStorage};

/// Datagrams per call.
pub const BATCH: usize = 32;

/// The buffers one `recvmmsg` reads into, kept from call to call.
pub struct RecvBatch {
    /// Bytes per datagram buffer.
    size: usize,
    /// Distance between two buffers' starts.
    stride: usize,
    bufs: Box<[u8]>,
    /// Each datagram's source; empty for connected sockets.
    names: Box<[SockAddrStorage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

// The raw pointers only point into the batch's own heap buffers, which move with it.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// [`BATCH`] buffers of `size` bytes; `sources`: the kernel also writes each datagram's
    /// source address ([`get`](Self::get) returns it).
    pub fn new(size: usize, sources: bool) -> RecvBatch {
        // Buffers a whole number of pages apart would all start in the same L1 cache set;
        // one cache line more spreads the first lines (what small datagrams fill) over sets.
        let stride = size + 64;
        let mut b = RecvBatch {
            size,
            stride,
            bufs: vec![0u8; BATCH * stride].into_boxed_slice(),
            names: (0..if sources { BATCH } else { 0 })
                .map(|_| SockAddrStorage::zeroed())
                .collect(),
            // SAFETY: all-zero is a valid iovec and mmsghdr.
            iovs: vec![unsafe { std::mem::zeroed() }; BATCH].into_boxed_slice(),
            hdrs: vec![unsafe { std::mem::zeroed() }; BATCH].into_boxed_slice(),
        };
        for i in 0..BATCH {
            b.iovs[i].iov_base = b.bufs[i * stride..].as_mut_ptr().cast();
            b.iovs[i].iov_len = size;
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
            if let Some(name) = b.names.get_mut(i) {
                h.msg_name = (name as *mut SockAddrStorage).cast();
            }
        }
        b
    }

    /// Reads up to [`BATCH`] datagrams from `fd` with `recvmmsg`'s `flags`
    /// (`MSG_DONTWAIT`, `MSG_WAITFORONE`); returns how many.
    pub fn recv(&mut self, fd: RawFd, flags: libc::c_int) -> std::io::Result<usize> {
        let with_names = !self.names.is_empty();
        for h in self.hdrs.iter_mut() {
            if with_names {
                h.msg_hdr.msg_namelen = std::mem::size_of::<SockAddrStorage>() as libc::socklen_t;
            }
            h.msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the sizes given.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Datagram `i` of the last [`recv`](Self::recv), cut at the buffer's size (as `recv` would
    /// cut it).
    pub fn data(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(self.size);
        &self.bufs[i * self.stride..i * self.stride + len]
    }

    /// Datagram `i` of the last [`recv`](Self::recv) and its source (`None` without sources,
    /// or for a source that is not IP).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let name = self.names.get(i)?;
        // SAFETY: the kernel wrote a sockaddr of `msg_namelen` bytes into `names[i]`, plain data
        // that may be copied bit for bit.
        let addr = unsafe { SockAddr::new(std::ptr::read(name), self.hdrs[i].msg_hdr.msg_namelen) };
        Some((self.data(i), addr.as_socket()?))
    }
}
