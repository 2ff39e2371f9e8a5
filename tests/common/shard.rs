//! A shard (cluster.md): a `stepview serve` process of a shard set, on its own port and data
//! directory, killed when dropped. The tests (`tests/common`) and the benchmarks
//! (`benches/common`, which includes this file) share it.

use super::unique::free_port;

/// The members' secret every shard of the tests and benchmarks shares.
pub const SHARD_SECRET: &str = "a members secret of at least thirty-two bytes";

pub struct Shard {
    pub child: std::process::Child,
    pub base: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Shard {
    /// A shard of `set` reading `topic` on `brokers`, ready at lag 0; `extra` flags after
    /// those. Authentication is off unless `extra` names a config file (with its apps).
    pub fn start(brokers: &str, topic: &str, set: &str, extra: &[&str]) -> Shard {
        Shard::start_in(
            tempfile::tempdir().unwrap(),
            free_port(),
            brokers,
            topic,
            set,
            extra,
        )
    }

    /// The same on a given data directory and port (a shard that comes back).
    pub fn start_in(
        dir: tempfile::TempDir,
        port: u16,
        brokers: &str,
        topic: &str,
        set: &str,
        extra: &[&str],
    ) -> Shard {
        let base = format!("http://127.0.0.1:{port}");
        let auth: &[&str] = if extra.contains(&"--config") {
            &[]
        } else {
            &["--auth", "false"]
        };
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_stepview"))
            .args(["serve", "--ready-max-lag", "0"])
            .args(auth)
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .args(["--brokers", brokers, "--topic", topic])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--cluster", set, "--advertise", &base])
            .args(extra)
            .env("STEPVIEW_CLUSTER_SECRET", SHARD_SECRET)
            .env(
                "STEPVIEW_LOG",
                std::env::var("STEPVIEW_SHARD_LOG").unwrap_or("warn".into()),
            )
            .spawn()
            .unwrap();
        Shard {
            child,
            base,
            port,
            dir,
        }
    }

    pub fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Stops it with SIGTERM and waits (a clean leave), keeping its data directory.
    pub fn stop(mut self) -> (tempfile::TempDir, u16) {
        self.signal(libc::SIGTERM);
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.port)
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
