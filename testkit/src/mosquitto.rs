//! Debian's mosquitto broker on loopback with mutual TLS, using an emulator state directory's
//! CA and server certificate: a broker that delivers every reply to every subscriber, for the
//! emulator's responder mode.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A mosquitto process, ended (by its id) when dropped, pass or fail.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts mosquitto with `state`'s ca.pem, server-cert.pem and server-key.pem (a state made by
/// `fleetprov_emulator::ca::Ca::load_or_create`), its configuration in `work`; returns once it
/// accepts TCP connections, or panics (within 10 s) naming what went wrong.
pub fn start(state: &Path, work: &Path) -> Mosquitto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = work.join("mosquitto.conf");
    let file = |name: &str| state.join(name).display().to_string();
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
             require_certificate true\nallow_anonymous true\n\
             # keep root so the 0600 keys of the state dir stay readable\nuser root\n",
            file("ca.pem"),
            file("server-cert.pem"),
            file("server-key.pem"),
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|_| crate::missing_tool("mosquitto", "Debian package mosquitto"));
    let mut m = Mosquitto { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = m.child.try_wait() {
            panic!("mosquitto exited before listening on {port}: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto not listening on {port} after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    m
}
