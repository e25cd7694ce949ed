//! Helpers of the stream tests: a Kafka-compatible broker (nisshi) on a loopback port, a
//! producer, function directories written for a test, and `sluice serve` as a child process.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::{component, repo_root, sluice_bin};

/// A free loopback port (bound once, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("binding a loopback port").local_addr().unwrap().port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on 127.0.0.1:{port} after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A nisshi broker, killed when dropped: in memory, or persistent (sqlite) so that it can be
/// restarted on the same port without losing topics, messages or committed offsets.
pub struct Broker {
    child: Child,
    pub port: u16,
    /// The directory of the sqlite storage, for a persistent broker.
    storage: Option<PathBuf>,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::spawn(free_port(), None)
    }

    /// A broker whose storage is `dir/nisshi.db`.
    pub fn start_persistent(dir: &Path) -> Broker {
        Broker::spawn(free_port(), Some(dir.to_path_buf()))
    }

    fn spawn(port: u16, storage: Option<PathBuf>) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(nisshi_bin());
        command.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url]);
        match &storage {
            Some(dir) => command.args(["--storage-engine", "sqlite://nisshi.db"]).current_dir(dir),
            None => command.args(["--storage-engine", "memory://nisshi/"]),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nisshi (scripts/test installs it into tools/nisshi)");
        wait_for_port(port, Duration::from_secs(30));
        Broker { child, port, storage }
    }

    /// Kills the broker (SIGKILL), waits `down`, and starts it again on the same port and storage.
    pub fn restart(&mut self, down: Duration) {
        assert!(self.storage.is_some(), "only a persistent broker keeps its data across a restart");
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::thread::sleep(down);
        let restarted = Broker::spawn(self.port, self.storage.take());
        *self = restarted;
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered, so a
    /// client's commits hang while it works through what it already fetched.
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let status = Command::new(nisshi_bin())
            .args(["topic", "create", "--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--partitions", &partitions.to_string(), topic])
            .stdout(Stdio::null())
            .status()
            .expect("running nisshi topic create");
        assert!(status.success(), "creating topic {topic}");
    }

    /// Sends `bodies` round-robin over `partitions` partitions and waits until all are acknowledged.
    pub fn produce(&self, topic: &str, partitions: i32, bodies: &[String]) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.address())
            .set("linger.ms", "5")
            .create()
            .expect("creating a producer");
        for (index, body) in bodies.iter().enumerate() {
            let partition = index as i32 % partitions;
            let mut record = BaseRecord::<(), [u8]>::to(topic).partition(partition).payload(body.as_bytes());
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, returned)) => {
                        producer.poll(Duration::from_millis(10));
                        record = returned;
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(60)).expect("every message acknowledged by the broker");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nisshi_bin() -> PathBuf {
    repo_root().join("tools/nisshi/bin/nisshi")
}

/// Writes `<dir>/sluice.toml` for the built component `component_name`, with `body` appended
/// (triggers, batching, sinks, limits); returns the function directory.
pub fn function_dir(dir: &Path, name: &str, component_name: &str, body: &str) -> PathBuf {
    let function = dir.join(name);
    std::fs::create_dir_all(&function).unwrap();
    let text = format!("name = \"{name}\"\ncomponent = \"{}\"\n{body}", component(component_name).display());
    std::fs::write(function.join("sluice.toml"), text).unwrap();
    function
}

/// `sluice serve` as a child process, killed (SIGKILL) if still running when dropped.
pub struct Serve {
    pub child: Child,
    pub log: PathBuf,
}

impl Serve {
    pub fn start(functions: &[&Path], data_dir: &Path, http_port: u16, log: PathBuf) -> Serve {
        let mut command = Command::new(sluice_bin());
        command.arg("serve");
        for function in functions {
            command.arg("--function").arg(function);
        }
        let child = command
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{http_port}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("creating the serve log"))
            .spawn()
            .expect("starting sluice serve");
        Serve { child, log }
    }

    /// Sends SIGTERM and waits for the exit; returns whether it exited 0.
    pub fn terminate(mut self, within: Duration) -> bool {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "serve did not stop within {within:?}; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no draining, no commits.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn child_is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Polls `probe` until it returns true or `within` passes; returns the last answer.
pub fn eventually(within: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the status, the headers and the body.
pub fn http_request(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "response without a blank line after the headers")
    })?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, head, response[split + 4..].to_vec()))
}
