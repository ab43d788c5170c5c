//! A TCP proxy that hands on every chunk of bytes a fixed time after it arrived, in both
//! directions, so that a controller and a database on one machine see the round trip of a
//! database on another host (`tc netem` needs a kernel module that containers seldom have).
//!
//!   delay_proxy LISTEN_ADDR TARGET_ADDR ONE_WAY_MICROSECONDS
//!
//! Bytes keep their order and are never held back by later ones: a reader thread stamps each
//! chunk with its due time and a writer thread sends it then, so pipelined messages overlap
//! as they would on a wire. Benchmark-only; it runs until killed.
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, target, micros] = args.as_slice() else {
        eprintln!("usage: delay_proxy LISTEN_ADDR TARGET_ADDR ONE_WAY_MICROSECONDS");
        std::process::exit(2);
    };
    let delay = Duration::from_micros(micros.parse().expect("ONE_WAY_MICROSECONDS"));
    let listener = TcpListener::bind(listen).expect("cannot listen");
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let server = match TcpStream::connect(target) {
            Ok(server) => server,
            Err(error) => {
                eprintln!("delay_proxy: cannot reach {target}: {error}");
                continue;
            }
        };
        for stream in [&client, &server] {
            let _ = stream.set_nodelay(true);
        }
        let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        pipe(client, server, delay);
        pipe(server2, client2, delay);
    }
}

/// Forwards what `from` sends to `to`, each chunk `delay` after it was read; the end of
/// `from` becomes the end of `to`'s writing side.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if chunks
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (at, bytes) in due {
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
