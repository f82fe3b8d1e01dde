//! Real SIP peers for the tests: kamailio as registrar and proxy, baresip as a phone driven
//! over its `ctrl_tcp` module. Each runs from a config written into its own temp dir, on
//! loopback ports picked here, and is killed when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fails the test unless the peers are installed: the README's test command installs them
/// (`scripts/setup.sh --test`), so a missing peer is a broken set-up, never a skip.
pub fn require_peers() {
    assert!(
        Path::new("/usr/sbin/kamailio").exists()
            && Path::new("/usr/bin/baresip").exists()
            && kamailio_modules().is_some_and(|m| m.join("tls.so").exists()),
        "baresip and kamailio (with its TLS module) are not installed: run scripts/setup.sh --test"
    );
}

/// kamailio's module directory (multiarch: `/usr/lib/<triplet>/kamailio/modules`).
fn kamailio_modules() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("kamailio/modules"))
        .find(|p| p.join("auth.so").exists())
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `hark-<what>-<pid>-<n>`.
    pub fn new(what: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hark-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback UDP port free right now (the OS picks it).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback TCP port free right now.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn terminate(child: &mut Child) {
    // SIGTERM lets kamailio take its worker processes down with it.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The SIP domain the kamailio instance serves.
pub const DOMAIN: &str = "hark.test";

/// kamailio as registrar (digest against the users given) and stateful proxy to the registered
/// contacts (record-routing, so in-dialog requests pass through it too).
pub struct Kamailio {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Kamailio {
    /// Starts kamailio with `users` as (name, password); `algorithm` is the auth module's
    /// `algorithm` parameter (`"MD5"` or `"SHA-256"`).
    pub fn start(users: &[(&str, &str)], algorithm: &str) -> Kamailio {
        Self::start_with(users, algorithm, None)
    }

    /// [`Kamailio::start`], granting registrations at most `max_expires` seconds.
    pub fn start_with(
        users: &[(&str, &str)],
        algorithm: &str,
        max_expires: Option<u32>,
    ) -> Kamailio {
        let dir = TempDir::new("kamailio");
        let port = free_udp_port();
        let mut users_cfg = String::new();
        for (i, (u, p)) in users.iter().enumerate() {
            let kw = if i == 0 { "if" } else { "else if" };
            users_cfg.push_str(&format!(
                "    {kw} ($fU == \"{u}\") {{ $var(pw) = \"{p}\"; }}\n"
            ));
        }
        let registrar_params = match max_expires {
            Some(s) => format!(
                "modparam(\"registrar\", \"max_expires\", {s})\nmodparam(\"registrar\", \"min_expires\", 1)"
            ),
            None => String::new(),
        };
        let mpath = kamailio_modules().expect("kamailio modules installed");
        let mpath = mpath.display();
        let cfg = format!(
            r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
alias="{DOMAIN}"
mpath="{mpath}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"
loadmodule "kex.so"
loadmodule "corex.so"
modparam("auth", "algorithm", "{algorithm}")
modparam("usrloc", "db_mode", 0)
{registrar_params}
request_route {{
  xlog("L_INFO", "REQ $rm from $si:$sp ruri=$ru\n");
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
  if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
  if (has_totag()) {{
    if (loose_route()) {{ t_relay(); exit; }}
    if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    sl_send_reply("404", "Not here"); exit;
  }}
  t_check_trans();
  if (is_method("REGISTER")) {{
    if (is_present_hf("Authorization")) {{ xlog("L_INFO", "AUTH $hdr(Authorization)\n"); }}
{users_cfg}    else {{ sl_send_reply("403", "Unknown user"); exit; }}
    if (!pv_www_authenticate("$td", "$var(pw)", "0")) {{ www_challenge("$td", "1"); exit; }}
    consume_credentials();
    if (!save("location")) {{ sl_reply_error(); }}
    exit;
  }}
  if (is_method("OPTIONS") && $rU == $null) {{ sl_send_reply("200", "OK"); exit; }}
  record_route();
  if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
  t_relay();
}}
"#
        );
        std::fs::write(dir.0.join("kamailio.cfg"), cfg).unwrap();
        let k = Kamailio {
            child: Self::spawn(&dir),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        k.wait_ready();
        k
    }

    /// Runs kamailio on the config in `dir`, logging to `kamailio.log` there (appending).
    fn spawn(dir: &TempDir) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.0.join("kamailio.log"))
            .unwrap();
        Command::new("/usr/sbin/kamailio")
            .args([
                "-f",
                dir.0.join("kamailio.cfg").to_str().unwrap(),
                "-DD",
                "-E",
                "-m",
                "32",
                "-M",
                "4",
            ])
            .arg("-Y")
            .arg(&dir.0)
            .arg("-P")
            .arg(dir.0.join("kamailio.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("kamailio starts")
    }

    /// Stops kamailio and starts it again on the same address: a registrar restart, which
    /// forgets every registration (`usrloc` keeps them in memory only).
    pub fn restart(&mut self) {
        terminate(&mut self.child);
        self.child = Self::spawn(&self.dir);
        self.wait_ready();
    }

    /// [`Kamailio::start`] on `ip` (an address of a test network) instead of loopback, giving
    /// up on a relayed request after 4 s without a response (`tm` `fr_timer`), and logging
    /// each request's Contact.
    pub fn start_on(ip: std::net::IpAddr, users: &[(&str, &str)]) -> Kamailio {
        let mut k = Self::start(users, "MD5");
        let path = k.dir.0.join("kamailio.cfg");
        let cfg = std::fs::read_to_string(&path)
            .unwrap()
            .replace(
                &format!("listen=udp:{}", k.addr),
                &format!("listen=udp:{ip}:{}", k.addr.port()),
            )
            .replace(
                "modparam(\"usrloc\", \"db_mode\", 0)",
                "modparam(\"usrloc\", \"db_mode\", 0)\nmodparam(\"tm\", \"fr_timer\", 4000)",
            )
            .replace("ruri=$ru\\n", "ruri=$ru contact=$ct\\n");
        std::fs::write(&path, cfg).unwrap();
        k.addr = SocketAddr::new(ip, k.addr.port());
        k.restart();
        k
    }

    /// Waits until kamailio answers an OPTIONS (its readiness event), up to 10 s.
    fn wait_ready(&self) {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let me = probe.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        for n in 0.. {
            assert!(
                Instant::now() < deadline,
                "kamailio did not start: {}",
                self.log()
            );
            let msg = format!(
                "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKprobe{n}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@{DOMAIN}>;tag=p\r\nTo: <sip:{DOMAIN}>\r\n\
                 Call-ID: probe{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            );
            probe.send_to(msg.as_bytes(), self.addr).unwrap();
            if let Ok((len, _)) = probe.recv_from(&mut buf) {
                if buf[..len].starts_with(b"SIP/2.0 ") {
                    return;
                }
            }
        }
    }

    /// kamailio's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("kamailio.log")).unwrap_or_default()
    }

    /// The log's lines for the requests of `method` it received, oldest first.
    pub fn requests(&self, method: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("REQ {method} from ")))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// baresip, driven over `ctrl_tcp` (netstring-framed JSON commands and events).
pub struct Baresip {
    child: Child,
    ctrl: TcpStream,
    buf: Vec<u8>,
    /// Its SIP address (ip:port).
    pub sip_addr: SocketAddr,
    /// Every event seen so far, as raw JSON.
    pub events: Vec<String>,
    dir: TempDir,
}

/// How a baresip's one account reaches the world.
enum Account<'a> {
    /// Direct calls to and from its own address, no registration.
    Direct { auto_answer: bool },
    /// Registered with kamailio at `registrar`, over TCP when `tcp`.
    Registered {
        registrar: SocketAddr,
        password: &'a str,
        tcp: bool,
    },
}

impl Baresip {
    /// Starts baresip with one account `user` on `domain`, registering through `registrar`
    /// (with `password`) when given, else making direct calls (no registration). It sends a
    /// 440 Hz tone (a WAV file, `aufile`) as its microphone.
    pub fn start(user: &str, registrar: Option<(SocketAddr, &str)>) -> Baresip {
        Self::start_with(user, registrar, false, None)
    }

    /// As [`Baresip::start`], answering incoming calls by itself when `auto_answer`, sending
    /// `microphone` instead of the tone when given, and recording what it hears during a call
    /// (`sndfile`; see [`Baresip::heard`]).
    pub fn start_with(
        user: &str,
        registrar: Option<(SocketAddr, &str)>,
        auto_answer: bool,
        microphone: Option<&hark::audio::Audio>,
    ) -> Baresip {
        // baresip 1.0 also binds TLS on its SIP port + 1 whatever `sip_transports` says, and
        // that port may be taken by another test's peer: then it exits, and is started again
        // on other ports.
        let account = match registrar {
            Some((registrar, password)) => Account::Registered {
                registrar,
                password,
                tcp: false,
            },
            None => Account::Direct { auto_answer },
        };
        Self::launch(user, &account, microphone)
    }

    /// Starts baresip, again on other ports while the ones it picked turn out to be taken.
    fn launch(user: &str, account: &Account, microphone: Option<&hark::audio::Audio>) -> Baresip {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_launch(user, account, microphone) {
                Ok(b) => return b,
                Err(log) if log.contains("Address already in use") => last = log,
                Err(log) => panic!("baresip's ctrl_tcp did not open:\n{log}"),
            }
        }
        panic!("baresip found no free ports in 5 tries:\n{last}");
    }

    /// One attempt of [`Baresip::launch`]: baresip, or its log if it did not come up.
    fn try_launch(
        user: &str,
        account: &Account,
        microphone: Option<&hark::audio::Audio>,
    ) -> Result<Baresip, String> {
        let tcp = matches!(account, Account::Registered { tcp: true, .. });
        // Beside its registrar: on loopback, or on the test network address it listens on
        // (media from loopback would not be routed out to a test network).
        let host = match account {
            Account::Registered { registrar, .. } if !registrar.ip().is_loopback() => {
                registrar.ip()
            }
            _ => std::net::IpAddr::from([127, 0, 0, 1]),
        };
        let tone = || hark::audio::Audio {
            rate: 8000,
            samples: (0..8000 * 5)
                .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 8000.0).sin())
                .collect(),
        };
        let dir = TempDir::new("baresip");
        let sip_port = if tcp {
            free_tcp_port()
        } else {
            free_udp_port()
        };
        let ctrl_port = free_tcp_port();
        let wav = dir.0.join("microphone.wav");
        match microphone {
            Some(audio) => hark::audio::wav::write_wav(&wav, audio).unwrap(),
            None => hark::audio::wav::write_wav(&wav, &tone()).unwrap(),
        }
        let recordings = dir.0.join("heard");
        std::fs::create_dir_all(&recordings).unwrap();
        let config = format!(
            "poll_method epoll\n\
             net_interface {host}\n\
             sip_listen {host}:{sip_port}\n\
             sip_transports {}\n\
             audio_source aufile,{}\n\
             audio_player aubridge,nil\n\
             audio_alert aubridge,nil\n\
             ausrc_srate 8000\n\
             auplay_srate 8000\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module aufile.so\n\
             module aubridge.so\n\
             module sndfile.so\n\
             snd_path {}\n\
             module_app account.so\n\
             module_app menu.so\n\
             module_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n\
             rtp_ports 30000-30999\n\
             ",
            if tcp { "udp,tcp" } else { "udp" },
            wav.display(),
            recordings.display()
        );
        std::fs::write(dir.0.join("config"), config).unwrap();
        let account = match account {
            Account::Registered {
                registrar,
                password,
                tcp: false,
            } => format!(
                "<sip:{user}@{DOMAIN}>;auth_pass={password};outbound=\"sip:{registrar};lr\";regint=300;audio_codecs=PCMU,PCMA\n"
            ),
            Account::Registered {
                registrar,
                password,
                tcp: true,
            } => format!(
                "<sip:{user}@{DOMAIN};transport=tcp>;auth_pass={password};outbound=\"sip:{registrar};transport=tcp;lr\";regint=300;audio_codecs=PCMU,PCMA\n"
            ),
            Account::Direct { auto_answer } => {
                let answermode = if *auto_answer { "auto" } else { "manual" };
                format!(
                    "<sip:{user}@127.0.0.1:{sip_port}>;regint=0;audio_codecs=PCMU,PCMA;answermode={answermode}\n"
                )
            }
        };
        std::fs::write(dir.0.join("accounts"), account).unwrap();
        std::fs::write(dir.0.join("contacts"), "").unwrap();
        let log = std::fs::File::create(dir.0.join("baresip.log")).unwrap();
        let child = Command::new("/usr/bin/baresip")
            .arg("-f")
            .arg(&dir.0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("baresip starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut child = child;
        let ctrl = loop {
            match TcpStream::connect(("127.0.0.1", ctrl_port)) {
                Ok(s) => break s,
                Err(_)
                    if Instant::now() < deadline && child.try_wait().ok().flatten().is_none() =>
                {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => {
                    terminate(&mut child);
                    let log =
                        std::fs::read_to_string(dir.0.join("baresip.log")).unwrap_or_default();
                    return Err(format!("{e}\n{log}"));
                }
            }
        };
        Ok(Baresip {
            child,
            ctrl,
            buf: Vec::new(),
            sip_addr: SocketAddr::from(([127, 0, 0, 1], sip_port)),
            events: Vec::new(),
            dir,
        })
    }

    /// Sends a command (`dial sip:...` → command `dial`, params `sip:...`).
    pub fn command(&mut self, command: &str, params: &str) {
        let json =
            serde_json::json!({"command": command, "params": params, "token": command}).to_string();
        let frame = format!("{}:{json},", json.len());
        self.ctrl.write_all(frame.as_bytes()).unwrap();
    }

    /// Waits up to `limit` for an event whose JSON contains every string in `needles`;
    /// returns it, or panics with the events seen and baresip's log.
    pub fn wait_event(&mut self, needles: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self
                .events
                .iter()
                .position(|e| needles.iter().all(|n| e.contains(n)))
            {
                return self.events.remove(i);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "baresip never sent an event with {needles:?}; events: {:#?}\nlog:\n{}",
                self.events,
                self.log()
            );
            self.ctrl
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .unwrap();
            let mut chunk = [0u8; 4096];
            match self.ctrl.read(&mut chunk) {
                Ok(0) => panic!("baresip closed ctrl_tcp; log:\n{}", self.log()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
            self.parse_frames();
        }
    }

    fn parse_frames(&mut self) {
        loop {
            let Some(colon) = self.buf.iter().position(|b| *b == b':') else {
                return;
            };
            let Ok(len) = std::str::from_utf8(&self.buf[..colon])
                .unwrap_or("x")
                .parse::<usize>()
            else {
                self.buf.clear();
                return;
            };
            if self.buf.len() < colon + 1 + len + 1 {
                return;
            }
            let body = String::from_utf8_lossy(&self.buf[colon + 1..colon + 1 + len]).into_owned();
            self.buf.drain(..colon + 1 + len + 1);
            self.events.push(body);
        }
    }

    /// Waits up to `limit` until baresip's log contains `needle` (for what it reports before
    /// the control connection is up, like its first registration).
    pub fn wait_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "baresip never logged {needle:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What baresip heard in its calls (the decoded far end, as `sndfile` dumped it), mono at
    /// the call's rate; empty before a call.
    pub fn heard(&self) -> Vec<hark::audio::Audio> {
        let mut heard = Vec::new();
        for entry in std::fs::read_dir(self.dir.0.join("heard"))
            .unwrap()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with("-dec.wav") {
                if let Ok(audio) = hark::audio::read_wav(&entry.path()) {
                    heard.push(audio);
                }
            }
        }
        heard
    }

    /// baresip's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("baresip.log")).unwrap_or_default()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

impl Kamailio {
    /// [`Kamailio::start`], listening on TCP as well as UDP, on the same port: the TCP tests
    /// use TCP, the readiness probe stays on UDP. kamailio answers RFC 5626 CRLF pings.
    pub fn start_tcp(users: &[(&str, &str)], algorithm: &str) -> Kamailio {
        Self::start_stream(users, algorithm, "tcp")
    }

    /// [`Kamailio::start`], listening on TLS as well as UDP, on the same port, with the test
    /// PKI's certificate (`tests/tls/peer.pem`, for 127.0.0.1). As a TLS client (relaying a
    /// call to a TLS contact) it does not check certificates: kamailio's default.
    pub fn start_tls(users: &[(&str, &str)], algorithm: &str) -> Kamailio {
        Self::start_stream(users, algorithm, "tls")
    }

    fn start_stream(users: &[(&str, &str)], algorithm: &str, proto: &str) -> Kamailio {
        let pki = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls");
        for _ in 0..5 {
            let mut k = Self::start(users, algorithm);
            // The TCP port of the same number must be free too; another port if it is not.
            if std::net::TcpListener::bind(k.addr).is_err() {
                continue;
            }
            let path = k.dir.0.join("kamailio.cfg");
            let tls = if proto == "tls" {
                "enable_tls=yes
"
            } else {
                ""
            };
            // Also log each request's protocol, source, Contact and top Via.
            let mut cfg = std::fs::read_to_string(&path)
                .unwrap()
                .replace(
                    "disable_tcp=yes\n",
                    &format!(
                        "disable_tcp=no\n{tls}tcp_children=1\ntcp_connection_lifetime=3600\nlisten={proto}:{}\n",
                        k.addr
                    ),
                )
                .replace(
                    "ruri=$ru\\n",
                    "ruri=$ru proto=$pr contact=$ct via=$hdr(Via)\\n",
                );
            if proto == "tls" {
                // The TLS module goes first (it sets up OpenSSL before the others allocate).
                cfg = cfg.replace(
                    "loadmodule \"tm.so\"\n",
                    &format!(
                        "loadmodule \"tls.so\"\nmodparam(\"tls\", \"certificate\", \"{pki}/peer.pem\")\n\
                         modparam(\"tls\", \"private_key\", \"{pki}/peer.key\")\n\
                         modparam(\"tls\", \"verify_certificate\", 0)\n\
                         modparam(\"tls\", \"tls_method\", \"TLSv1.2+\")\nloadmodule \"tm.so\"\n"
                    ),
                );
            }
            std::fs::write(&path, cfg).unwrap();
            k.restart();
            k.wait_tcp_ready();
            return k;
        }
        panic!("no port free for kamailio on both UDP and {proto} in 5 tries");
    }

    /// Waits until kamailio accepts TCP connections on its address, up to 10 s.
    pub fn wait_tcp_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "kamailio does not listen on TCP: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Baresip {
    /// baresip with one account `user` registering with kamailio at `registrar` over TCP
    /// (`;transport=tcp` in its AOR and outbound proxy): its REGISTER, INVITE and BYE go over
    /// TCP. Sends the 440 Hz tone as its microphone.
    pub fn start_tcp(user: &str, registrar: SocketAddr, password: &str) -> Baresip {
        let account = Account::Registered {
            registrar,
            password,
            tcp: true,
        };
        Self::launch(user, &account, None)
    }
}
