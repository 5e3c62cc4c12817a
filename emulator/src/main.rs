//! `fleetprov-emulator`: run the fleet-provisioning endpoint, issue claims, list things, or
//! attach the provisioning service to another broker.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use fleetprov_emulator::{ca, responder, throttle, Emulator, EmulatorConfig};

const USAGE: &str = "\
fleetprov-emulator: a local AWS IoT Core fleet-provisioning endpoint

USAGE:
  fleetprov-emulator serve [--state-dir DIR] [--bind ADDR] [--port PORT]
                           [--template NAME=FILE]... [--account FILE]
                           [--hook NAME=COMMAND]... [--ready-file PATH] [--quiet]
                           [--rate-limit API=TPS]... [--throttle reject|disconnect]
      Serve MQTT 5 and 3.1.1 over mutual TLS. The first start creates DIR/ca.pem,
      DIR/claim-cert.pem and DIR/claim-key.pem. Without --template the seed template is
      served as FleetTemplate. --account lists the thing types, thing groups, billing
      groups and policies that exist (JSON, see the README); a template referencing
      another fails the request, as on AWS. --hook runs COMMAND (sh -c) as template
      NAME's pre-provisioning hook: AWS's input JSON on stdin, its answer JSON on stdout,
      5 seconds to answer. --ready-file receives the port once listening.
      Defaults: --state-dir ./emulator-state --bind 127.0.0.1 --port 8883.
      --rate-limit limits an API (CreateKeysAndCertificate, CreateCertificateFromCsr,
      RegisterThing) to TPS requests per second (token bucket, off by default);
      --throttle says how a throttled request is answered: a 429 ThrottlingException
      rejection (reject, the default) or a closed connection (disconnect).
      Stops on SIGINT or SIGTERM.

  fleetprov-emulator claim [--state-dir DIR] --out-cert FILE --out-key FILE
                           [--valid-for SECS] [--common-name CN]
      Issue another claim certificate (key written 0600). A running server accepts it
      at once. --valid-for 300 gives AWS-like temporary claims; default 10 years.

  fleetprov-emulator things [--state-dir DIR]
      Print the registered things as JSON.

  fleetprov-emulator respond --host HOST --port PORT --ca FILE --cert FILE --key FILE
                             [--state-dir DIR] [--template NAME=FILE]... [--client-id ID]
                             [--ready-file PATH] [--quiet]
      Connect to another MQTT broker as an ordinary client and answer the provisioning
      requests published there. --ready-file is written once the request topics are
      subscribed. See the README for its limits.

  fleetprov-emulator --help
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "serve" => Options::parse(rest, SERVE_FLAGS).and_then(|o| serve(&o)),
        "claim" => Options::parse(rest, CLAIM_FLAGS).and_then(|o| claim(&o)),
        "things" => Options::parse(rest, THINGS_FLAGS).and_then(|o| things(&o)),
        "respond" => Options::parse(rest, RESPOND_FLAGS).and_then(|o| respond(&o)),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => Err(Error::Usage(format!("unknown command {other:?}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(Error::Usage(msg)) => {
            eprintln!("fleetprov-emulator: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Error::Failed(msg)) => {
            eprintln!("fleetprov-emulator: {msg}");
            ExitCode::from(1)
        }
    }
}

enum Error {
    Help,
    Usage(String),
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::Failed(e.to_string())
}

const SERVE_FLAGS: &[&str] = &[
    "--state-dir",
    "--bind",
    "--port",
    "--template",
    "--account",
    "--hook",
    "--ready-file",
    "--quiet",
    "--rate-limit",
    "--throttle",
];
const CLAIM_FLAGS: &[&str] = &[
    "--state-dir",
    "--out-cert",
    "--out-key",
    "--valid-for",
    "--common-name",
];
const THINGS_FLAGS: &[&str] = &["--state-dir"];
const RESPOND_FLAGS: &[&str] = &[
    "--ready-file",
    "--host",
    "--port",
    "--ca",
    "--cert",
    "--key",
    "--state-dir",
    "--template",
    "--client-id",
    "--quiet",
];
/// Flags that take no value.
const SWITCHES: &[&str] = &["--quiet"];

/// Parsed `--flag value` pairs, in order (`--template` may repeat).
struct Options(Vec<(String, String)>);

impl Options {
    fn parse(args: &[String], allowed: &[&str]) -> Result<Options, Error> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if arg == "-h" || arg == "--help" {
                return Err(Error::Help);
            }
            // Both `--flag value` and `--flag=value`.
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
                _ => (arg.as_str(), None),
            };
            if !allowed.contains(&flag) {
                return Err(Error::Usage(format!("unknown option {arg:?}")));
            }
            let value = if SWITCHES.contains(&flag) {
                String::new()
            } else if let Some(v) = inline {
                v
            } else {
                it.next()
                    .cloned()
                    .ok_or_else(|| Error::Usage(format!("{flag} needs a value")))?
            };
            out.push((flag.to_owned(), value));
        }
        Ok(Options(out))
    }

    fn get(&self, flag: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|(f, _)| f == flag)
    }

    fn require(&self, flag: &str) -> Result<&str, Error> {
        self.get(flag)
            .ok_or_else(|| Error::Usage(format!("{flag} is required")))
    }

    fn state_dir(&self) -> PathBuf {
        PathBuf::from(self.get("--state-dir").unwrap_or("./emulator-state"))
    }

    fn number<T: std::str::FromStr>(&self, flag: &str) -> Result<Option<T>, Error> {
        self.get(flag)
            .map(|v| {
                v.parse()
                    .map_err(|_| Error::Usage(format!("{flag}: {v:?} is not a valid number")))
            })
            .transpose()
    }

    fn templates(&self) -> Result<Vec<(String, PathBuf)>, Error> {
        self.0
            .iter()
            .filter(|(f, _)| f == "--template")
            .map(|(_, v)| {
                let (name, file) = v
                    .split_once('=')
                    .ok_or_else(|| Error::Usage(format!("--template {v:?}: expected NAME=FILE")))?;
                if !fleetprov_emulator::valid_template_name(name) {
                    return Err(Error::Usage(format!(
                        "--template {name:?}: names are 1-36 characters of A-Z a-z 0-9 _ -"
                    )));
                }
                Ok((name.to_owned(), PathBuf::from(file)))
            })
            .collect()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(failed)
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn serve(o: &Options) -> Result<(), Error> {
    let mut cfg = EmulatorConfig::new(o.state_dir());
    if let Some(bind) = o.get("--bind") {
        cfg.bind = bind
            .parse::<IpAddr>()
            .map_err(|_| Error::Usage(format!("--bind {bind:?}: not an IP address")))?;
    }
    cfg.port = o.number("--port")?.unwrap_or(8883);
    cfg.templates = o.templates()?;
    cfg.account = o.get("--account").map(PathBuf::from);
    cfg.hooks =
        o.0.iter()
            .filter(|(f, _)| f == "--hook")
            .map(|(_, v)| {
                v.split_once('=')
                    .map(|(name, command)| (name.to_owned(), command.to_owned()))
                    .ok_or_else(|| Error::Usage(format!("--hook {v:?}: expected NAME=COMMAND")))
            })
            .collect::<Result<_, _>>()?;
    cfg.log = !o.has("--quiet");
    let names: Vec<String> = if cfg.templates.is_empty() {
        vec![fleetprov_emulator::SEED_TEMPLATE_NAME.to_owned()]
    } else {
        cfg.templates.iter().map(|(n, _)| n.clone()).collect()
    };
    let ready_file = o.get("--ready-file").map(PathBuf::from);
    let limits =
        o.0.iter()
            .filter(|(flag, _)| flag == "--rate-limit")
            .map(|(_, v)| throttle::parse_rate_limit(v).map_err(Error::Usage))
            .collect::<Result<Vec<_>, Error>>()?;
    let mode = match o.get("--throttle") {
        None => throttle::ThrottleMode::Reject,
        Some(m) => throttle::ThrottleMode::parse(m).ok_or_else(|| {
            Error::Usage(format!("--throttle {m:?}: expected reject or disconnect"))
        })?,
    };

    runtime()?.block_on(async move {
        let emulator = Emulator::start(cfg).await.map_err(failed)?;
        emulator.throttle().set_mode(mode);
        for (api, tps) in limits {
            emulator.throttle().set_rate_limit(api, Some(tps));
            println!("rate limit: {api:?} {tps}/s");
        }
        let host = match emulator.local_addr().ip() {
            ip if ip.is_loopback() => "localhost".to_owned(),
            ip => ip.to_string(),
        };
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
            ca::write_atomic(path, format!("{}\n", emulator.port()).as_bytes(), 0o644)
                .map_err(|e| failed(format!("{}: {e}", path.display())))?;
        }
        let signal = wait_for_signal().await;
        emulator.stop().await;
        if let Some(path) = &ready_file {
            let _ = std::fs::remove_file(path);
        }
        signal
    })
}

async fn wait_for_signal() -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(failed)?;
    let mut int = signal(SignalKind::interrupt()).map_err(failed)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn claim(o: &Options) -> Result<(), Error> {
    let dir = o.state_dir();
    let out_cert = PathBuf::from(o.require("--out-cert")?);
    let out_key = PathBuf::from(o.require("--out-key")?);
    let valid_for = Duration::from_secs(o.number("--valid-for")?.unwrap_or(3650 * 86_400));
    if valid_for.is_zero() {
        return Err(Error::Usage("--valid-for must be at least 1 second".into()));
    }
    let common_name = o.get("--common-name").unwrap_or("fleetprov emulator claim");
    let ca = ca::Ca::load_or_create(&dir).map_err(failed)?;
    let issued = ca.issue_claim(common_name, valid_for).map_err(failed)?;
    let key = issued
        .private_key_pem
        .as_deref()
        .ok_or_else(|| failed("the CA returned a claim without a key"))?;
    ca::write_atomic(&out_key, key.as_bytes(), 0o600)
        .map_err(|e| failed(format!("{}: {e}", out_key.display())))?;
    ca::write_atomic(&out_cert, issued.certificate_pem.as_bytes(), 0o644)
        .map_err(|e| failed(format!("{}: {e}", out_cert.display())))?;
    fleetprov_emulator::record_claim(&dir, &issued).map_err(failed)?;
    println!("certificate id: {}", issued.certificate_id);
    println!("claim cert:     {}", absolute(&out_cert).display());
    println!("claim key:      {}", absolute(&out_key).display());
    Ok(())
}

fn things(o: &Options) -> Result<(), Error> {
    let things = fleetprov_emulator::list_things(&o.state_dir()).map_err(failed)?;
    let json = serde_json::to_string_pretty(&things).map_err(failed)?;
    println!("{json}");
    Ok(())
}

fn respond(o: &Options) -> Result<(), Error> {
    let ready_file = o.get("--ready-file").map(PathBuf::from);
    let cfg = responder::ResponderConfig {
        host: o.require("--host")?.to_owned(),
        port: o
            .number("--port")?
            .ok_or_else(|| Error::Usage("--port is required".into()))?,
        ca: PathBuf::from(o.require("--ca")?),
        cert: PathBuf::from(o.require("--cert")?),
        key: PathBuf::from(o.require("--key")?),
        state_dir: o.state_dir(),
        templates: o.templates()?,
        client_id: o
            .get("--client-id")
            .unwrap_or("fleetprov-emulator-responder")
            .to_owned(),
        log: !o.has("--quiet"),
    };
    runtime()?.block_on(async move {
        let responder = responder::Responder::start(cfg).await.map_err(failed)?;
        println!("fleetprov-emulator responding on {}", responder.broker());
        if let Some(path) = &ready_file {
            ca::write_atomic(path, b"subscribed\n", 0o644)
                .map_err(|e| failed(format!("{}: {e}", path.display())))?;
        }
        let signal = wait_for_signal().await;
        responder.stop().await;
        signal
    })
}
