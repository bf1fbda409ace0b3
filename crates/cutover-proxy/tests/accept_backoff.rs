//! Accepting when out of file descriptors, alone in its test binary: it lowers this
//! process's descriptor limit, which would starve any test running beside it.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use support::{client, config, get, start};

/// This process's user plus system CPU time, in clock ticks (1/100 s on Linux), read from
/// `/proc/self/stat` opened beforehand (no descriptor is free while the test measures).
fn cpu_ticks(stat: &std::fs::File) -> u64 {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; 4096];
    let n = stat.read_at(&mut buf, 0).expect("stat");
    let stat = String::from_utf8_lossy(&buf[..n]);
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    field(11) + field(12)
}

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// Sets this process's soft descriptor limit, keeping the hard one. Retried for a while:
/// running `prlimit` takes descriptors, which may take a moment to be freed.
fn set_soft_nofile(soft: &str) {
    for _ in 0..50 {
        let status = Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={soft}:"))
            .status();
        if let Ok(status) = status {
            assert!(status.success(), "prlimit failed");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("cannot run prlimit");
}

fn soft_nofile() -> String {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("a soft limit")
        .to_string()
}

/// The finding: the admin API's accept loop retried errors without pause. With the
/// process out of descriptors and clients waiting, accept fails at once every time: a loop
/// without back-off spins a core. With it, the listener idles, and serves again once
/// descriptors are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_instead_of_spinning() {
    let proxy = start(config(Vec::new())).await;
    let admin = proxy.admin_addr();
    let listener = proxy.listen_addrs()[0];
    let before = soft_nofile();
    let holders = |port: u16| {
        Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import resource, socket, time\n\
                 _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n\
                 resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n\
                 s = [socket.create_connection(('127.0.0.1', {port})) for _ in range(40)]\n\
                 print('open', flush=True)\n\
                 time.sleep(60)\n"
            ))
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs")
    };
    let stat = std::fs::File::open("/proc/self/stat").expect("stat");
    set_soft_nofile(&(open_descriptors() + 6).to_string());
    let mut children = vec![holders(admin.port()), holders(listener.port())];
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (ticks, started) = (cpu_ticks(&stat), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(&stat) - ticks;
    let elapsed = started.elapsed();
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    // The proxy sees its accepted connections close and frees their descriptors.
    tokio::time::sleep(Duration::from_millis(500)).await;
    set_soft_nofile(&before);
    eprintln!("accept loops used {used} ticks in {elapsed:?}");
    assert!(
        used < 40,
        "the accept loops used {used} ticks of CPU in {elapsed:?} while out of descriptors"
    );
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        get(&client(), admin, "/healthz", &[]).await
    })
    .await
    .expect("the admin listener serves again");
    assert_eq!(served.0, StatusCode::OK);
}
