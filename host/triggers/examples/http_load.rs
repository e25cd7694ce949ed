//! A loopback HTTP load generator for the HTTP trigger benchmark: `connections` keep-alive
//! connections, each sending POSTs back to back for `seconds`.
//!
//! `http_load <host:port> <path> <connections> <seconds> <body>` prints one JSON line —
//! `{"requests":…,"non_2xx":…,"seconds":…,"p50_us":…,"p99_us":…}`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("usage: http_load <host:port> <path> <connections> <seconds> <body>")]
    Usage,
    #[error("`{0}` is not a {1}")]
    Argument(String, &'static str),
    #[error("connection to {address}: {source}")]
    Io { address: SocketAddr, source: std::io::Error },
    #[error("{address} answered without a Content-Length: {head}")]
    NoContentLength { address: SocketAddr, head: String },
}

struct Connection {
    stream: TcpStream,
    address: SocketAddr,
    buffer: Vec<u8>,
}

impl Connection {
    /// Sends one request and reads its whole response; returns the status.
    async fn exchange(&mut self, request: &[u8]) -> Result<u16, LoadError> {
        let io = |source| LoadError::Io { address: self.address, source };
        self.stream.write_all(request).await.map_err(io)?;
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
            })
            .ok_or_else(|| LoadError::NoContentLength { address: self.address, head: head.clone() })?;
        while self.buffer.len() < head_end + length {
            self.fill().await?;
        }
        self.buffer.drain(..head_end + length);
        Ok(status)
    }

    async fn fill(&mut self) -> Result<(), LoadError> {
        let mut chunk = [0u8; 16 * 1024];
        let read = self.stream.read(&mut chunk).await.map_err(|source| LoadError::Io { address: self.address, source })?;
        if read == 0 {
            let closed = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed mid-response");
            return Err(LoadError::Io { address: self.address, source: closed });
        }
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(())
    }
}

/// Latencies (µs) and non-2xx count of one connection's requests until `deadline`.
async fn drive(address: SocketAddr, request: Vec<u8>, deadline: Instant) -> Result<(Vec<u64>, u64), LoadError> {
    let stream = TcpStream::connect(address).await.map_err(|source| LoadError::Io { address, source })?;
    stream.set_nodelay(true).map_err(|source| LoadError::Io { address, source })?;
    let mut connection = Connection { stream, address, buffer: Vec::new() };
    let (mut latencies, mut non_2xx) = (Vec::new(), 0);
    while Instant::now() < deadline {
        let sent = Instant::now();
        let status = connection.exchange(&request).await?;
        latencies.push(sent.elapsed().as_micros() as u64);
        if !(200..300).contains(&status) {
            non_2xx += 1;
        }
    }
    Ok((latencies, non_2xx))
}

#[tokio::main]
async fn main() -> Result<(), LoadError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, path, connections, seconds, body] = args.as_slice() else {
        return Err(LoadError::Usage);
    };
    let address: SocketAddr = address.parse().map_err(|_| LoadError::Argument(address.clone(), "host:port"))?;
    let connections: usize = connections.parse().map_err(|_| LoadError::Argument(connections.clone(), "connection count"))?;
    let seconds: f64 = seconds.parse().map_err(|_| LoadError::Argument(seconds.clone(), "number of seconds"))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let drivers: Vec<_> = (0..connections).map(|_| tokio::spawn(drive(address, request.clone(), deadline))).collect();
    let (mut latencies, mut non_2xx) = (Vec::new(), 0);
    for driver in drivers {
        let (some, failed) = driver.await.expect("a connection task panicked")?;
        latencies.extend(some);
        non_2xx += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(0);
    println!(
        "{{\"requests\":{},\"non_2xx\":{non_2xx},\"seconds\":{elapsed:.3},\"p50_us\":{},\"p99_us\":{}}}",
        latencies.len(),
        percentile(0.50),
        percentile(0.99)
    );
    Ok(())
}
