//! `fleetprov-emulator`: run the fleet-provisioning endpoint, issue claims, list things, or
//! attach the provisioning service to another broker.

mod cli;
mod policy_cli;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fleetprov_emulator::files::write_atomic;
use fleetprov_emulator::{ca, responder, throttle, Emulator, EmulatorConfig};

use cli::{Cli, Command};

fn main() -> ExitCode {
    // Usage errors exit 2 with the message on stderr; --help and --version exit 0 on stdout.
    let cli = Cli::try_parse().unwrap_or_else(|e| e.exit());
    let quiet = match &cli.command {
        Command::Serve(o) => o.quiet.quiet,
        Command::Respond(o) => o.quiet.quiet,
        Command::Claim(_) | Command::Things(_) | Command::Policy(_) => false,
    };
    Stderr::install(if quiet {
        log::LevelFilter::Off
    } else {
        log::LevelFilter::Info
    });
    let result = match cli.command {
        Command::Serve(o) => serve(o),
        Command::Claim(o) => claim(o),
        Command::Things(o) => things(o),
        Command::Respond(o) => respond(o),
        Command::Policy(p) => return policy_cli::run(p),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            // The reason a command failed is its result, not a log message: --quiet keeps it.
            eprintln!("fleetprov-emulator: {msg}");
            ExitCode::from(1)
        }
    }
}

/// The emulator's messages, one line each on stderr. Records from dependencies (rustls, rumqttc)
/// are left out: the emulator logs what they would say about a connection itself.
struct Stderr;

impl Stderr {
    fn install(level: log::LevelFilter) {
        static LOGGER: Stderr = Stderr;
        // Only fails if a logger is already installed, which nothing else here does.
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(level);
    }
}

impl log::Log for Stderr {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level() && metadata.target().starts_with("fleetprov_emulator")
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            _ => "",
        };
        // A closed stderr is no reason to stop serving.
        let _ = writeln!(
            std::io::stderr().lock(),
            "fleetprov-emulator: {level}{}",
            record.args()
        );
    }

    fn flush(&self) {}
}

type Result<T = (), E = String> = std::result::Result<T, E>;

fn failed(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(failed)
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn serve(o: cli::Serve) -> Result {
    let device_certificates = o.device_certificates();
    let mut cfg = EmulatorConfig::new(o.state.state_dir);
    cfg.device_certificates = device_certificates;
    cfg.bind = o.bind;
    cfg.port = o.port;
    cfg.templates = o.templates;
    cfg.account = o.account;
    cfg.hooks = o.hooks;
    cfg.claim_policy = o.claim_policy;
    let names: Vec<String> = if cfg.templates.is_empty() {
        vec![fleetprov_emulator::SEED_TEMPLATE_NAME.to_owned()]
    } else {
        cfg.templates.iter().map(|(n, _)| n.clone()).collect()
    };
    let ready_file = o.ready_file;
    let (limits, mode) = (o.rate_limits, throttle::ThrottleMode::from(o.throttle));

    runtime()?.block_on(async move {
        // Before anything is announced: a stop right after the ready file appears is then a
        // clean one (exit 0, ready file removed), not death by the signal's default action.
        let stop = StopSignals::install()?;
        let port = cfg.port;
        let emulator = Emulator::start(cfg).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                format!(
                    "{e} (port {port} is taken; choose another --port, or --port 0 for a free one)"
                )
            } else {
                e.to_string()
            }
        })?;
        emulator.throttle().set_mode(mode);
        for (api, tps) in limits {
            emulator.throttle().set_rate_limit(api, Some(tps));
            log::info!("rate limit: {} {tps}/s", api.name());
        }
        let host = match emulator.local_addr().ip() {
            ip if ip.is_loopback() => "localhost".to_owned(),
            ip => ip.to_string(),
        };
        // What a device needs to connect: the command's output, on stdout whatever the log level.
        println!("fleetprov-emulator listening on {}", emulator.local_addr());
        println!("endpoint:   {host}");
        println!("port:       {}", emulator.port());
        println!("ca:         {}", absolute(&emulator.ca_path()).display());
        println!(
            "claim cert: {}",
            absolute(&emulator.claim_cert_path()).display()
        );
        println!(
            "claim key:  {}",
            absolute(&emulator.claim_key_path()).display()
        );
        println!("templates:  {}", names.join(", "));
        if let Some(path) = &ready_file {
            // Written whole (temporary file + rename) so a waiting script never reads half a port.
            if let Err(e) = write_atomic(path, format!("{}\n", emulator.port()).as_bytes(), 0o644) {
                emulator.stop().await;
                return Err(format!("--ready-file: {e}"));
            }
        }
        stop.wait().await;
        emulator.stop().await;
        if let Some(path) = &ready_file {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    })
}

/// SIGTERM and SIGINT, caught from [`StopSignals::install`] on: one that arrives before
/// [`StopSignals::wait`] is kept and ends the wait at once.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Must run inside the runtime.
    fn install() -> Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let handler = |kind, name| {
            signal(kind).map_err(|e| format!("cannot install the {name} handler: {e}"))
        };
        Ok(StopSignals {
            term: handler(SignalKind::terminate(), "SIGTERM")?,
            int: handler(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn claim(o: cli::Claim) -> Result {
    let dir = o.state.state_dir;
    let ca = ca::Ca::load_or_create(&dir).map_err(failed)?;
    let issued = ca
        .issue_claim(&o.common_name, Duration::from_secs(o.valid_for))
        .map_err(failed)?;
    let key = issued
        .private_key_pem
        .as_deref()
        .ok_or_else(|| failed("the CA returned a claim without a key"))?;
    write_atomic(&o.out_key, key.as_bytes(), 0o600).map_err(|e| format!("--out-key: {e}"))?;
    write_atomic(&o.out_cert, issued.certificate_pem.as_bytes(), 0o644)
        .map_err(|e| format!("--out-cert: {e}"))?;
    fleetprov_emulator::record_claim(&dir, &issued).map_err(failed)?;
    println!("certificate id: {}", issued.certificate_id);
    println!("claim cert:     {}", absolute(&o.out_cert).display());
    println!("claim key:      {}", absolute(&o.out_key).display());
    Ok(())
}

fn things(o: cli::Things) -> Result {
    let things = fleetprov_emulator::list_things(&o.state.state_dir).map_err(failed)?;
    let json = serde_json::to_string_pretty(&things).map_err(failed)?;
    println!("{json}");
    Ok(())
}

fn respond(o: cli::Respond) -> Result {
    let ready_file = o.ready_file;
    let cfg = responder::ResponderConfig {
        host: o.host,
        port: o.port,
        ca: o.ca,
        cert: o.cert,
        key: o.key,
        state_dir: o.state.state_dir,
        templates: o.templates,
        client_id: o.client_id,
    };
    runtime()?.block_on(async move {
        let stop = StopSignals::install()?;
        let responder = responder::Responder::start(cfg).await.map_err(failed)?;
        println!("fleetprov-emulator responding on {}", responder.broker());
        if let Some(path) = &ready_file {
            if let Err(e) = write_atomic(path, b"subscribed\n", 0o644) {
                responder.stop().await;
                return Err(format!("--ready-file: {e}"));
            }
        }
        stop.wait().await;
        responder.stop().await;
        if let Some(path) = &ready_file {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    })
}
