//! The `hark` command: run the device, listen to a recording, measure, check a config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use hark::audio::{read_wav, read_wav_bytes, Audio};
use hark::config::agent::{eou_mode_name, interrupt_mode_name};
use hark::config::{AgentConfig, Config};
use hark::listen::models::{demo_speech, ModelId, ModelStore};
use hark::listen::timeline::Timeline;
use hark::listen::{self, Models};

/// hark: a voice-agent appliance. On-device listening (denoise, VAD, turn detection) and a
/// kiosk agent on the local sound card.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Config file (default: $HARK_CONFIG, then /etc/hark/hark.toml, then built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory searched first for model files (then $HARK_MODELS, /usr/share/hark/models, ./models).
    #[arg(long, global = true, value_name = "DIR")]
    models_dir: Option<PathBuf>,
    /// More log output (repeat for more); logs go to stderr. `HARK_LOG` takes a tracing filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Print `peak_rss_kb=N` to stderr on exit (used by `hark bench`).
    #[arg(long, global = true, hide = true)]
    report_rss: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Denoise → VAD → turn detection over a recording; prints a timeline.
    Listen {
        /// A WAV file (8–48 kHz, mono or stereo, 16-bit or float). Default: the embedded demo speech.
        file: Option<PathBuf>,
        /// Print JSON instead of the timeline.
        #[arg(long)]
        json: bool,
        /// Also draw waveform, VAD and turn probabilities to this PNG.
        #[arg(long, value_name = "PNG")]
        plot: Option<PathBuf>,
    },
    /// Measure each stage on this machine (single thread) and print a table.
    Bench {
        /// Speech recordings to measure on (default: the embedded demo speech).
        files: Vec<PathBuf>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Smart Turn inferences per engine.
        #[arg(long, default_value_t = 20)]
        iterations: usize,
    },
    /// Validate the config and the models it needs, and print what would run.
    Check {
        /// Print nothing on success (exit status only).
        #[arg(long)]
        quiet: bool,
        /// Also ask each configured provider whether it answers and takes its key (costs
        /// nothing: a models listing, or a stream opened and closed unused).
        #[arg(long)]
        online: bool,
    },
    /// List the models, where each is found, and whether its checksum matches.
    Models,
    /// List the ALSA capture and playback devices, with the rates and channels each takes.
    Devices {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Talk to the configured agent through this machine's microphone and speaker, showing
    /// the live state, transcripts and each turn's latency.
    Console,
    /// Run the configured agent as a daemon (systemd's `hark run`): on the local sound card, or
    /// as a SIP phone endpoint when the config has a `[sip]` section.
    Run,
    /// Call someone with the configured agent over `[sip]` (with `[agent.voicemail]`'s
    /// answering-machine detection, if set) and return when the call ends.
    Call {
        /// Who to call: a SIP URI such as `sip:alice@pbx.example.com`.
        target: String,
        /// Seconds to let it ring.
        #[arg(long, default_value_t = 60.0)]
        ring: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let report_rss = cli.report_rss;
    let result = run(cli);
    if report_rss {
        eprintln!("peak_rss_kb={}", hark::bench::peak_rss_kb().unwrap_or(0));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hark: error: {e}");
            ExitCode::from(e.code)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A failure with the exit status it maps to: 2 for bad input (config, file), 1 otherwise.
struct Failure {
    code: u8,
    message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn input(e: impl std::fmt::Display) -> Failure {
    Failure {
        code: 2,
        message: e.to_string(),
    }
}

fn fail(e: impl std::fmt::Display) -> Failure {
    Failure {
        code: 1,
        message: e.to_string(),
    }
}

fn load_config(cli: &Cli) -> Result<(Config, Option<PathBuf>), Failure> {
    match Config::locate(cli.config.as_deref()) {
        Some(path) => Ok((Config::load(&path).map_err(input)?, Some(path))),
        None => Ok((Config::default(), None)),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let (config, config_path) = load_config(&cli)?;
    let store = ModelStore::new(cli.models_dir.as_deref(), &config.models);
    // No command: a configured agent with a model to think with talks at the kiosk; otherwise
    // the offline demo listens to the embedded speech.
    let default = if config.agent.is_some() && (config.llm.is_some() || config.realtime.is_some()) {
        Command::Console
    } else {
        Command::Listen {
            file: None,
            json: false,
            plot: None,
        }
    };
    match cli.command.unwrap_or(default) {
        Command::Listen { file, json, plot } => {
            let (audio, name) = read_input(file.as_deref())?;
            let mut models = Models::load(&config.listen, &store).map_err(fail)?;
            let engines = models
                .report()
                .iter()
                .map(|m| format!("{}: {}", m.id.name(), m.engine))
                .collect();
            let (events, trace) =
                listen::listen_to(&config.listen, &mut models, &audio, plot.is_some())
                    .map_err(fail)?;
            let timeline = Timeline::new(name, audio.rate, audio.duration(), engines, events);
            if json {
                println!("{}", serde_json::to_string_pretty(&timeline).map_err(fail)?);
            } else {
                print!("{}", timeline.render());
            }
            if let Some(png) = plot {
                listen::plot::draw(&png, &audio, &timeline, &trace).map_err(fail)?;
                if !json {
                    println!("plot: {}", png.display());
                }
            }
            Ok(())
        }
        Command::Bench {
            files,
            json,
            iterations,
        } => {
            let mut audio = Audio {
                rate: 0,
                samples: Vec::new(),
            };
            let inputs: Vec<Option<&Path>> = if files.is_empty() {
                vec![None]
            } else {
                files.iter().map(|f| Some(f.as_path())).collect()
            };
            for f in inputs {
                let (a, _) = read_input(f)?;
                let a = if audio.rate == 0 || a.rate == audio.rate {
                    a
                } else {
                    a.resampled(audio.rate)
                };
                audio.rate = a.rate;
                audio.samples.extend_from_slice(&a.samples);
            }
            let mut report = hark::bench::run(&store, &audio, iterations).map_err(fail)?;
            let exe = std::env::current_exe().map_err(fail)?;
            let mut common = Vec::new();
            if let Some(c) = &config_path {
                common.extend(["--config".to_string(), c.display().to_string()]);
            }
            if let Some(d) = &cli.models_dir {
                common.extend(["--models-dir".to_string(), d.display().to_string()]);
            }
            hark::bench::run_processes(&mut report, &exe, &common, files.first()).map_err(fail)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).map_err(fail)?);
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
        Command::Check { quiet, online } => {
            let models = Models::load(&config.listen, &store).map_err(fail)?;
            let providers = config.provider_entries().map_err(input)?;
            if quiet && !online {
                return Ok(());
            }
            if quiet {
                return ping_all(&providers, true);
            }
            match &config_path {
                Some(p) => println!("config: {} (valid)", p.display()),
                None => println!("config: none found (--config, $HARK_CONFIG, /etc/hark/hark.toml); using defaults"),
            }
            for m in models.report() {
                println!(
                    "model {}: {} on {} (loaded in {:.0} ms)",
                    m.id.name(),
                    m.source,
                    m.engine,
                    m.load_time.as_secs_f64() * 1e3
                );
            }
            let l = &config.listen;
            println!(
                "would run: the listening front end: denoise {}, Silero VAD (start {:.2} / end {:.2}, \
                 min speech {} s, min silence {} s, padding {} s, smoothing {}), turn detection {}",
                if l.denoise.enabled { "on" } else { "off" },
                l.vad.start_threshold(),
                l.vad.end_threshold(),
                l.vad.min_speech,
                l.vad.min_silence,
                l.vad.padding,
                l.vad.smoothing,
                if l.turn.enabled { format!("Smart Turn v3.2 (threshold {})", l.turn.threshold) } else { "off".into() },
            );
            match &config.agent {
                Some(agent) => {
                    print_agent(agent);
                    check_sounds(agent)?;
                }
                None => println!("agent: none configured (no [agent] section)"),
            }
            if let Some(sip) = &config.sip {
                print_sip(sip)?;
            }
            if providers.is_empty() {
                println!("providers: none configured (no [stt], [llm], [tts] or [realtime])");
            }
            for p in &providers {
                println!("{}: {}", p.section, p.summary);
            }
            if config.stt.is_some() || config.llm.is_some() || config.tts.is_some() {
                let f = config.fallback.policy();
                println!(
                    "fallback: a failed provider is retried after {} s, dropped after {} failures",
                    f.cooldown.as_secs_f64(),
                    f.max_failures
                );
            }
            if online {
                return ping_all(&providers, false);
            }
            Ok(())
        }
        Command::Devices { json } => {
            let devices = hark::transport::local::device::list();
            if json {
                println!("{}", serde_json::to_string_pretty(&devices).map_err(fail)?);
            } else {
                print_devices(&devices);
            }
            Ok(())
        }
        Command::Console => kiosk(&config, &store, true),
        Command::Run if config.sip.is_some() => phone(&config, &store),
        Command::Call { target, ring } => place_call(&config, &store, &target, ring),
        Command::Run => kiosk(&config, &store, false),
        Command::Models => {
            println!(
                "search path: {}",
                store
                    .dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut bad = None;
            for id in ModelId::ALL {
                match store.load(id) {
                    Ok((bytes, source)) => println!(
                        "{:<12} {:>9} bytes  sha256 ok  {}",
                        id.name(),
                        bytes.len(),
                        source
                    ),
                    Err(e) => {
                        println!("{:<12} {e}", id.name());
                        bad = Some(e);
                    }
                }
            }
            match store.onnxruntime_library() {
                Some(p) => println!("onnxruntime  {}", p.display()),
                None => println!("onnxruntime  not found (engine \"auto\" uses tract)"),
            }
            bad.map_or(Ok(()), |e| Err(fail(e)))
        }
    }
}

/// `hark check --online`: pings every provider in turn; a failure for any is the command's.
fn ping_all(
    providers: &[hark::config::entries::ProviderEntry],
    quiet: bool,
) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    let mut failed = Vec::new();
    for p in providers {
        let started = std::time::Instant::now();
        let result = rt.block_on(p.ping());
        let ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(()) if !quiet => println!("ping {}: ok ({ms:.0} ms)", p.section),
            Ok(()) => {}
            Err(e) => {
                println!("ping {}: failed: {e} ({ms:.0} ms)", p.section);
                failed.push(p.section.as_str());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(fail(format!("no answer from {}", failed.join(", "))))
    }
}

/// What `hark check` says about a config-defined agent: enough to recognise it and to see
/// what it may do, without connecting to its MCP servers (that starts processes and opens
/// connections; the session does it at start).
fn print_agent(agent: &AgentConfig) {
    let instructions = agent.instructions.trim();
    let first = instructions.lines().next().unwrap_or_default();
    let shown: String = first.chars().take(80).collect();
    let more = if shown.len() < instructions.len() {
        "…"
    } else {
        ""
    };
    println!(
        "agent: instructions ({} chars, {} lines): \"{shown}{more}\"",
        instructions.chars().count(),
        instructions.lines().count()
    );
    match &agent.greeting {
        Some(g) => println!("agent: greeting: {g:?}"),
        None => println!("agent: no greeting (waits for the user to speak)"),
    }
    let mut tools: Vec<String> = agent
        .builtin_tools
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    tools.extend(
        agent
            .webhooks
            .iter()
            .map(|w| format!("{} (webhook)", w.name)),
    );
    println!(
        "agent: tools: {}",
        if tools.is_empty() {
            "none".into()
        } else {
            tools.join(", ")
        }
    );
    for server in &agent.mcp_servers {
        println!(
            "agent: tools of MCP server {} (listed when a session starts)",
            server.label()
        );
    }
    let o = agent.session_options();
    println!(
        "agent: end of utterance {} {}–{} s; interruptions {} ({} s of speech or {} words{}); \
         up to {} LLM rounds per reply; tool timeout {} s{}",
        eou_mode_name(o.eou.mode),
        o.eou.min_max_speech_wait_timeout[0],
        o.eou.min_max_speech_wait_timeout[1],
        interrupt_mode_name(o.interrupt.mode),
        o.interrupt.interrupt_min_duration,
        o.interrupt.interrupt_min_words,
        if o.interrupt.resume_on_false_interrupt {
            format!(
                ", resume after a false one within {} s",
                o.interrupt.false_interrupt_pause_duration
            )
        } else {
            String::new()
        },
        o.max_tool_depth,
        o.tool_timeout.as_secs_f64(),
        match o.max_context_items {
            Some(n) => format!("; context kept to {n} items"),
            None => String::new(),
        },
    );
    match &o.wake_up {
        None => println!("agent: no wake-up timer"),
        Some(w) => {
            let after = w.after.as_secs_f64();
            let end = match &w.goodbye {
                Some(g) => format!("then says {g:?} and ends the session"),
                None => "then ends the session".to_string(),
            };
            match &w.prompt {
                Some(p) => println!(
                    "agent: wake-up after {after} s of silence: says {p:?} up to {} time{}, {end}",
                    w.max_prompts,
                    if w.max_prompts == 1 { "" } else { "s" }
                ),
                None => println!("agent: wake-up after {after} s of silence: {end}"),
            }
        }
    }
}

/// What `hark check` says about `[sip]`: where the phone listens, whom it registers with and
/// who may call. Passwords are only said to be set; TLS files are loaded, so a bad one fails.
fn print_sip(sip: &hark::config::SipConfig) -> Result<(), Failure> {
    let transport = format!("{:?}", sip.transport).to_ascii_lowercase();
    let contact = match &sip.public_address {
        Some(a) => format!("peers reach it at {a}"),
        None => "its address for peers found from the route to the registrar".into(),
    };
    let bind = sip.bind_addr().map_err(fail)?;
    println!("sip: {transport} on {bind} ({contact})");
    if hark::transport::sip::tcp::TlsSetup::from_config(sip)
        .map_err(fail)?
        .is_some()
    {
        let trusted = sip.tls_ca.as_deref().map_or_else(
            || "the system's roots".to_string(),
            |ca| format!("the CAs in {ca}"),
        );
        let presents = sip.tls_certificate.as_deref().map_or_else(
            || "no certificate: calls come only over connections hark opened".to_string(),
            |c| format!("presents {c} to peers that connect"),
        );
        println!("sip: TLS checks peers against {trusted}; {presents}");
    }
    let user = sip.user.as_deref().unwrap_or("hark");
    match &sip.registrar {
        Some(r) => {
            let domain = sip.domain.clone().unwrap_or_else(|| {
                let host = r.trim_start_matches("sip:");
                host.rsplit_once(':').map_or(host, |(h, _)| h).to_string()
            });
            println!(
                "sip: registers sip:{user}@{domain} with {r} for {} s (digest user {}, password {})",
                sip.expires,
                sip.auth_user.as_deref().unwrap_or(user),
                if sip.password.is_some() { "set" } else { "not set" }
            );
        }
        None => println!("sip: no registrar: takes direct calls only"),
    }
    if sip.registrar.is_some() && sip.transport == hark::config::sip::SipTransport::Udp {
        let nat = match &sip.public_address {
            Some(_) => "",
            None => "; behind a NAT, registers the address the registrar sees",
        };
        match sip.keepalive {
            0 => println!("sip: no keep-alives to the registrar{nat}"),
            s => println!("sip: a keep-alive to the registrar every {s} s{nat}"),
        }
    }
    let callers = if sip.allow.is_empty() {
        "the registrar only".to_string()
    } else {
        format!("the registrar and {}", sip.allow.join(", "))
    };
    let challenge = match sip.inbound_credentials() {
        Some(a) => format!(
            "digest-challenged (user {}, {})",
            a.user,
            a.algorithms.join(", ")
        ),
        None => "not challenged".into(),
    };
    println!("sip: calls accepted from {callers}, {challenge}");
    println!(
        "sip: up to {} call{} at once (one more is answered 486); codecs {}; RTP ports {}-{}",
        sip.max_sessions,
        if sip.max_sessions == 1 { "" } else { "s" },
        sip.codecs.join(", "),
        sip.rtp_ports[0],
        sip.rtp_ports[1]
    );
    match sip.session_expires {
        0 => println!("sip: no session timer asked for on calls hark places"),
        s => println!("sip: session timer of {s} s asked for on calls hark places"),
    }
    Ok(())
}

/// Loads the sounds the agent section names, as a session would, so a missing or unreadable
/// file fails `hark check` rather than the first call.
fn check_sounds(agent: &AgentConfig) -> Result<(), Failure> {
    const RATE: u32 = 16_000;
    let seconds = |c: &hark::audio::mixer::Clip| c.samples().len() as f64 / f64::from(RATE);
    if let (Some(t), Some(c)) = (
        agent.thinking_sound(RATE).map_err(fail)?,
        &agent.thinking_audio,
    ) {
        println!(
            "agent: thinking sound {} ({:.1} s, volume {}), looped while the LLM works",
            c.file.display(),
            seconds(&t.clip),
            t.volume
        );
    }
    if let Some(w) = &agent.warm_transfer {
        if let (Some(m), Some(f)) = (w.to_options(RATE).map_err(fail)?.hold_music, &w.hold_music) {
            println!(
                "agent: hold music {} ({:.1} s), looped while a caller is on hold",
                f.display(),
                seconds(&m)
            );
        }
    }
    Ok(())
}

/// A WAV file, or the embedded demo speech.
fn read_input(file: Option<&Path>) -> Result<(Audio, String), Failure> {
    match file {
        Some(f) => Ok((read_wav(f).map_err(input)?, f.display().to_string())),
        None => {
            let bytes = demo_speech().ok_or_else(|| {
                input("this build has no embedded demo speech (feature `bundled-models`); give a WAV file")
            })?;
            Ok((
                read_wav_bytes(bytes).map_err(fail)?,
                "demo speech (embedded)".into(),
            ))
        }
    }
}

fn print_devices(devices: &[hark::transport::local::DeviceInfo]) {
    if devices.is_empty() {
        println!("no ALSA PCM devices found");
    }
    let caps = |c: &Option<hark::transport::local::device::Capabilities>| match c {
        None => "-".to_string(),
        Some(c) => format!(
            "{}-{} Hz (as is: {}), {}-{} ch",
            c.rates.0,
            c.rates.1,
            c.common_rates
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            c.channels.0,
            c.channels.1
        ),
    };
    for d in devices {
        println!("{}  ({})", d.name, d.description);
        println!("    capture:  {}", caps(&d.capture));
        println!("    playback: {}", caps(&d.playback));
    }
}

/// The runtime of the long-running commands: two workers, one per core of the smallest board.
fn daemon_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(fail)
}

/// Resolves at Ctrl-C or SIGTERM (systemd's stop).
async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `hark console` and `hark run`: the kiosk until Ctrl-C or SIGTERM.
fn kiosk(config: &Config, store: &ModelStore, console: bool) -> Result<(), Failure> {
    use hark::service::kiosk::{self, KioskEvent};
    let models = Models::load(&config.listen, store).map_err(fail)?;
    let runtime = daemon_runtime()?;
    runtime.block_on(async {
        let (events, mut rx) = tokio::sync::broadcast::channel(256);
        let show = tokio::spawn(async move {
            while let Ok(e) = rx.recv().await {
                if console {
                    show_event(&e);
                } else if let KioskEvent::Session(hark::session::SessionEvent::TurnMetrics(m)) = &e
                {
                    tracing::info!(?m, "turn");
                }
            }
        });
        let result = kiosk::run(config, models, events, terminated()).await;
        show.abort();
        let stats = result.map_err(fail)?;
        if console {
            use std::sync::atomic::Ordering::Relaxed;
            println!(
                "audio: capture {} xruns, {} reopens; playback {} xruns, {} reopens",
                stats.capture.xruns.load(Relaxed),
                stats.capture.reopens.load(Relaxed),
                stats.playback.xruns.load(Relaxed),
                stats.playback.reopens.load(Relaxed)
            );
        }
        Ok(())
    })
}

/// `hark run` with `[sip]`: the phone endpoint until Ctrl-C or SIGTERM; calls are logged.
fn phone(config: &Config, store: &ModelStore) -> Result<(), Failure> {
    use hark::service::phone::{self, PhoneEvent};
    let runtime = daemon_runtime()?;
    runtime.block_on(async {
        let (events, mut rx) = tokio::sync::broadcast::channel(256);
        let log = tokio::spawn(async move {
            while let Ok(e) = rx.recv().await {
                match e {
                    PhoneEvent::CallStarted { call, from } => {
                        tracing::info!(%call, %from, "call started")
                    }
                    PhoneEvent::CallEnded { call, reason } => {
                        tracing::info!(%call, ?reason, "call ended")
                    }
                    PhoneEvent::Dtmf { call, digit } => {
                        tracing::info!(%call, %digit, "key pressed")
                    }
                    PhoneEvent::Session {
                        call,
                        event: hark::session::SessionEvent::TurnMetrics(m),
                    } => {
                        tracing::info!(%call, ?m, "turn")
                    }
                    _ => {}
                }
            }
        });
        let result = phone::run(config, store.clone(), events, terminated()).await;
        log.abort();
        result.map_err(fail)
    })
}

/// `hark call`: one outbound call with the agent; prints how it ended.
fn place_call(config: &Config, store: &ModelStore, target: &str, ring: f64) -> Result<(), Failure> {
    use hark::service::phone::{self, PhoneEvent};
    use hark::session::SessionEvent;
    if config.sip.is_none() {
        return Err(fail(phone::PhoneError::NoSip));
    }
    if !(ring.is_finite() && ring > 0.0 && ring <= 600.0) {
        return Err(fail(format!(
            "--ring: expected seconds between 0 and 600, got {ring}"
        )));
    }
    let runtime = daemon_runtime()?;
    runtime.block_on(async {
        let (events, mut rx) = tokio::sync::broadcast::channel(256);
        let log = tokio::spawn(async move {
            while let Ok(e) = rx.recv().await {
                match e {
                    PhoneEvent::CallStarted { call, .. } => println!("-- answered ({call})"),
                    PhoneEvent::Session { event, .. } => match event {
                        SessionEvent::UserTurn { text } => println!("callee: {text}"),
                        SessionEvent::AgentText { text } => println!("agent:  {text}"),
                        SessionEvent::Voicemail { detected } => println!(
                            "-- {}",
                            if detected {
                                "voicemail detected"
                            } else {
                                "a person answered"
                            }
                        ),
                        _ => {}
                    },
                    _ => {}
                }
            }
        });
        let ring = std::time::Duration::from_secs_f64(ring);
        let result = phone::call(config, store.clone(), events, target, ring, terminated()).await;
        log.abort();
        let reason = result.map_err(fail)?;
        println!("-- call ended: {reason:?}");
        Ok(())
    })
}

/// One line per thing worth seeing in `hark console`.
fn show_event(e: &hark::service::kiosk::KioskEvent) {
    use hark::listen::ListenEvent;
    use hark::service::kiosk::KioskEvent;
    use hark::session::SessionEvent;
    match e {
        KioskEvent::SessionStarted => println!("-- conversation started"),
        KioskEvent::SessionEnded => println!("-- conversation ended; speak to start another"),
        KioskEvent::Listen(ListenEvent::Turn(t)) => println!(
            "   pause: end-of-turn probability {:.2}{}",
            t.probability,
            if t.complete { " (turn over)" } else { "" }
        ),
        KioskEvent::Listen(_) => {}
        KioskEvent::Session(s) => match s {
            SessionEvent::AgentStateChanged { state } => println!("[agent {state:?}]"),
            SessionEvent::UserTranscript {
                text,
                is_final: true,
            } => println!("you: {text}"),
            SessionEvent::AgentText { text } => println!("agent: {text}"),
            SessionEvent::ToolCalled { name, arguments } => println!("tool {name}({arguments})"),
            SessionEvent::Interrupted => println!("[interrupted]"),
            SessionEvent::Error { component, message } => println!("[{component} error] {message}"),
            SessionEvent::TurnMetrics(m) => {
                let ms = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) => format!("{:.0} ms", (b - a) * 1e3),
                    _ => "-".into(),
                };
                println!(
                    "   turn {}: end of speech -> reply audio {}, LLM first token {}, TTS first byte {}",
                    m.turn,
                    ms(m.user_speech_end, m.first_sample_played),
                    ms(m.llm_request, m.llm_first_token),
                    ms(m.tts_request, m.tts_first_byte)
                );
            }
            _ => {}
        },
    }
}
