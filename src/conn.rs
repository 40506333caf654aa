//! A connection as livechain's own HTTP/1.1 code reads and writes it: a plain TCP socket of the
//! runtime thread that serves it, or a Pingora stream (TLS, or anything else Pingora hands over).
//!
//! Pingora's stream wraps every socket in buffering and timing layers (two clock reads per
//! read or write that has to wait) that the front and the upstream exchange do not use. More
//! importantly, Pingora accepts on one runtime thread and runs the connection on another: the
//! socket stays registered with the accepting thread's reactor, so every readiness event of the
//! connection crossed threads (an eventfd write and a wake-up per event, measured at nearly
//! one per request). A plain TCP connection is therefore re-registered with the thread that
//! serves it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub enum Conn {
    Tcp(TcpStream),
    Pingora(Stream),
}

impl Conn {
    /// Takes a stream from Pingora; a plain TCP one becomes a socket of the current runtime.
    /// What Pingora's stream had already buffered (its read buffer, bytes put back with
    /// `rewind`) is returned with it: the socket alone does not hold those bytes any more.
    pub fn adopt(mut stream: Stream) -> (Conn, Vec<u8>) {
        if stream.as_any().downcast_ref::<L4Stream>().is_none() {
            return (Conn::Pingora(stream), Vec::new());
        }
        let ahead = buffered(&mut stream);
        let conn = Conn::take_descriptor(stream);
        (conn, ahead)
    }

    /// The peer's address, when the socket has one (a Unix socket has none).
    pub fn peer_ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Conn::Tcp(tcp) => tcp.peer_addr().ok().map(|a| a.ip()),
            Conn::Pingora(stream) => stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip())),
        }
    }

    fn take_descriptor(stream: Stream) -> Conn {
        let Some(l4) = stream.as_any().downcast_ref::<L4Stream>() else {
            return Conn::Pingora(stream);
        };
        // SAFETY: the descriptor is owned by `stream`, which outlives this borrow (it is
        // duplicated right here and only closed by the `drop(stream)` below).
        #[allow(unsafe_code)]
        let fd = unsafe { BorrowedFd::borrow_raw(l4.as_raw_fd()) };
        let Ok(own) = fd.try_clone_to_owned() else {
            return Conn::Pingora(stream);
        };
        let std = std::net::TcpStream::from(own);
        match TcpStream::from_std(std) {
            Ok(tcp) => {
                // Closes Pingora's descriptor (and its registration); the socket lives on in ours.
                drop(stream);
                let _ = tcp.set_nodelay(true);
                Conn::Tcp(tcp)
            }
            Err(_) => Conn::Pingora(stream),
        }
    }

    /// Moves a plain TCP connection opened on another runtime thread to this one's reactor (two
    /// `epoll_ctl` calls, once), so that its readiness events stop waking the other thread.
    /// `None` when the socket could not be registered here (it is closed); a Pingora stream is
    /// returned as it is.
    pub fn rehome(self) -> Option<Conn> {
        match self {
            Conn::Tcp(tcp) => {
                tokio::runtime::Handle::try_current().ok()?;
                let std = tcp.into_std().ok()?;
                TcpStream::from_std(std).ok().map(Conn::Tcp)
            }
            other => Some(other),
        }
    }

    /// Whether nothing has arrived on an idle connection and the peer has not closed it: the
    /// only state in which it may carry another request. HTTP/1.1 has no way to tell which
    /// request a response belongs to but its order, so bytes that arrived while the connection
    /// sat idle (a second response, the rest of a body longer than its `Content-Length`, the
    /// 408 some servers send before closing an idle connection) would be read as the answer to
    /// the next request, another client's. Such a connection is never reused.
    ///
    /// A plain socket asks its reactor first: tokio clears a socket's readiness when a read
    /// comes back short (the socket was drained) and sets it again when epoll reports bytes or
    /// the peer's close, so a socket not ready has received nothing since the reactor last
    /// looked (it looks whenever the thread waits, or every few dozen tasks). Only a socket
    /// marked ready (or one just moved to this reactor, see [`Conn::is_clean_now`]) costs a
    /// system call: a non-blocking `MSG_PEEK` (one per request otherwise, a tenth of the
    /// proxy's system calls). A TLS stream is polled once without a waker:
    /// it reads what the socket holds, and only application data or the end of the stream
    /// count (a TLS record that carries neither, such as a session ticket, does not).
    pub fn is_clean(&mut self) -> bool {
        match self {
            Conn::Tcp(tcp) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                tcp.poll_read_ready(&mut cx).is_pending() || peek_clean(tcp)
            }
            Conn::Pingora(s) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut byte = [0u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                Pin::new(s).poll_read(&mut cx, &mut buf).is_pending()
            }
        }
    }

    /// [`Conn::is_clean`] without asking the reactor: for a socket just registered with this
    /// thread's, whose readiness the reactor has not learnt yet.
    pub fn is_clean_now(&mut self) -> bool {
        match self {
            Conn::Tcp(tcp) => peek_clean(tcp),
            Conn::Pingora(_) => self.is_clean(),
        }
    }

    /// The connection as a Pingora stream, for Pingora's HTTP session.
    pub fn into_pingora(self) -> Stream {
        match self {
            Conn::Tcp(tcp) => Box::new(L4Stream::from(tcp)),
            Conn::Pingora(s) => s,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Pingora(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Pingora(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Pingora(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Pingora(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Pingora(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Pingora(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Nothing to read and not closed, by a non-blocking `MSG_PEEK` of one byte.
fn peek_clean(tcp: &TcpStream) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(
        socket2::SockRef::from(tcp).peek(&mut probe),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock
    )
}

/// Whatever `stream` gives without waiting (a waker-less poll returns at once): the bytes its
/// buffers hold, and those already on the socket.
fn buffered(stream: &mut Stream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut chunk = [0u8; 4096];
    // Bounded: a peer that keeps sending is read by the connection's own loop.
    while out.len() < 64 * 1024 {
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut *stream).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) if !buf.filled().is_empty() => out.extend_from_slice(buf.filled()),
            _ => break,
        }
    }
    out
}

/// Parts up to this size in all are copied into one buffer for a stream that cannot write
/// vectors (TLS: one buffer makes one record); larger ones are written one by one.
const COALESCE: usize = 64 * 1024;

/// Writes all of `parts`, in as few system calls as the stream allows: one `writev(2)` for a
/// head and a body instead of copying the body behind the head first.
pub async fn write_parts(stream: &mut Conn, mut parts: &mut [io::IoSlice<'_>]) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if !AsyncWrite::is_write_vectored(&*stream) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total <= COALESCE {
            let mut wire = Vec::with_capacity(total);
            for p in parts.iter() {
                wire.extend_from_slice(p);
            }
            return stream.write_all(&wire).await;
        }
        for p in parts.iter() {
            stream.write_all(p).await?;
        }
        return Ok(());
    }
    io::IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        let n = stream.write_vectored(parts).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        io::IoSlice::advance_slices(&mut parts, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bytes Pingora's stream had read ahead (or had put back) are handed over with the
    /// socket, never dropped with Pingora's buffers.
    #[tokio::test]
    async fn adopting_keeps_what_pingora_had_read_ahead() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut l4 = L4Stream::from(server);
        // Pingora read the first line into its buffer, and put back a prefix.
        let mut line = [0u8; 16];
        let mut got = 0;
        while got < line.len() {
            got += l4.read(&mut line[got..]).await.unwrap();
        }
        l4.rewind(&line);
        l4.rewind(b"");
        let (mut conn, ahead) = Conn::adopt(Box::new(l4));
        assert_eq!(ahead, b"GET / HTTP/1.1\r\n");
        assert!(matches!(conn, Conn::Tcp(_)));
        client.write_all(b"host: x\r\n\r\n").await.unwrap();
        let mut rest = [0u8; 11];
        conn.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"host: x\r\n\r\n");
    }
}
