//! `ringraft-rtt`: the loopback TCP round trip of this machine with plain
//! blocking sockets (two threads, TCP_NODELAY, one message in flight): the
//! floor under every network hop of a cluster on this box, and the raw TCP
//! baseline of `tools/bench.sh`. `ringraft-load --calibrate --connections 1
//! --depth 1` measures the same round trip through ringraft's client and an
//! io_uring executor; the difference is what the runtime adds per hop.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser, Debug)]
#[command(
    name = "ringraft-rtt",
    about = "Loopback TCP round trip with blocking sockets: the network floor of this machine"
)]
struct Args {
    /// Measured round trips
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    round_trips: u64,
    /// Round trips before measuring (not recorded)
    #[arg(long, default_value_t = 1_000)]
    warmup: u64,
    /// Message size in bytes, each way (at most 1 MiB)
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=(1 << 20)))]
    bytes: u64,
    /// Write the summary as JSON here (count, p50_us, p90_us, p99_us, max_us)
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringraft-rtt: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An I/O error, said with what was being done.
fn io(what: &'static str) -> impl Fn(std::io::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn run(args: &Args) -> Result<(), String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io("bind"))?;
    let addr = listener.local_addr().map_err(io("local address"))?;
    let size = args.bytes as usize;
    // The echo side: answers each message with itself until the peer closes.
    let echo = std::thread::spawn(move || -> Result<(), String> {
        let (mut s, _) = listener.accept().map_err(io("accept"))?;
        s.set_nodelay(true).map_err(io("nodelay"))?;
        let mut buf = vec![0u8; size];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&buf).map_err(io("echo write"))?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(format!("echo read: {e}")),
            }
        }
    });
    let mut s = TcpStream::connect(addr).map_err(io("connect"))?;
    s.set_nodelay(true).map_err(io("nodelay"))?;
    let mut buf = vec![0xA5u8; size];
    // Nanoseconds, 1 ns to 10 s, 3 significant digits.
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("valid bounds");
    for i in 0..args.warmup + args.round_trips {
        let t = Instant::now();
        s.write_all(&buf).map_err(io("write"))?;
        s.read_exact(&mut buf).map_err(io("read"))?;
        if i >= args.warmup {
            h.saturating_record(t.elapsed().as_nanos().max(1) as u64);
        }
    }
    drop(s);
    echo.join()
        .map_err(|_| "the echo thread panicked".to_string())??;
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "loopback TCP round trip, blocking sockets, {size} B each way, {} round trips: \
         p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        h.len(),
        us(0.5),
        us(0.9),
        us(0.99),
        h.max() as f64 / 1000.0
    );
    if let Some(path) = &args.json {
        let j = serde_json::json!({
            "count": h.len(),
            "bytes": size,
            "p50_us": us(0.5),
            "p90_us": us(0.9),
            "p99_us": us(0.99),
            "max_us": h.max() as f64 / 1000.0,
        });
        std::fs::write(path, format!("{j}\n"))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}
