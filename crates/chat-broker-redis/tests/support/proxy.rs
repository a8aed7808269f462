//! A TCP proxy in front of Redis that can cut off the node behind it while
//! other nodes stay connected: either loudly (its connections are closed and
//! new ones refused) or silently (nothing is forwarded any more, nothing is
//! closed: a partition without a reset, found only by health checks).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    /// Bumped on every cut; each proxied connection ends when it changes.
    cuts: watch::Sender<u64>,
    /// While true, nothing is forwarded and nothing is closed.
    frozen: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let cuts = watch::channel(0u64).0;
        let frozen = watch::channel(false).0;
        let task = tokio::spawn({
            let open = open.clone();
            let cuts = cuts.clone();
            let frozen = frozen.clone();
            async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        return;
                    };
                    if !open.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let mut cut = cuts.subscribe();
                    let mut ice = frozen.subscribe();
                    tokio::spawn(async move {
                        if *ice.borrow() {
                            // Hold the connection, silent, until the thaw.
                            let _ = ice.wait_for(|f| !*f).await;
                            return;
                        }
                        let Ok(mut server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let froze = tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                            _ = cut.changed() => false,
                            _ = ice.wait_for(|f| *f) => true,
                        };
                        if froze {
                            let _ = ice.wait_for(|f| !*f).await;
                        }
                    });
                }
            }
        });
        Proxy {
            addr,
            open,
            cuts,
            frozen,
            task,
        }
    }

    /// The proxy's own address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Closes every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Stops forwarding without closing anything.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Drops the frozen connections and forwards new ones again.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
