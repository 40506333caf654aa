//! TCP pieces shared by the test relays (`forward`, `fault`): a listener that may take a port
//! again after its last life, connecting to the target within a bound, and closing with a reset.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The longest a relay waits to connect to its target.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Listens on `addr` (port 0: an ephemeral one).
pub fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("relay socket");
    // The same port again after a kill, whatever its old connections left in TIME_WAIT.
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(addr)
        .unwrap_or_else(|e| panic!("relay bind {addr}: {e}"));
    socket.listen(1024).expect("relay listen")
}

/// Connects to `target` with `TCP_NODELAY` (relayed requests and answers are small and must
/// not wait for Nagle); `None` when it cannot within [`CONNECT_TIMEOUT`].
pub async fn connect(target: SocketAddr) -> Option<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    Some(stream)
}

/// Makes the close of `stream` (when it is dropped) a reset instead of an orderly FIN.
pub fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
