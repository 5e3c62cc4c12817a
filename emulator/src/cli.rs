//! The command line, declared once: clap derives both the parser and `--help` from these types,
//! so the two cannot disagree. Values are checked here (a bad one is a usage error, exit 2)
//! and reach the commands already typed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fleetprov_emulator::throttle::{self, Api, ThrottleMode};

/// A local AWS IoT Core fleet-provisioning endpoint.
#[derive(Debug, Parser)]
#[command(
    name = "fleetprov-emulator",
    version,
    // `--port 1 --port 2` means port 2, as it always has; clap alone would refuse the repeat.
    args_override_self = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MQTT 5 and 3.1.1 over mutual TLS; stops on SIGINT or SIGTERM.
    ///
    /// The first start creates DIR/ca.pem, DIR/claim-cert.pem and DIR/claim-key.pem. The
    /// endpoint, port and those files are printed on stdout; connections and refusals are
    /// logged on stderr (--quiet turns that off).
    Serve(Serve),
    /// Issue another claim certificate (key written 0600); a running server accepts it at once.
    Claim(Claim),
    /// Print the registered things as JSON.
    Things(Things),
    /// Connect to another MQTT broker as an ordinary client and answer the provisioning requests
    /// published there (see the README for its limits).
    Respond(Respond),
    /// Ask what a certificate's policies allow (see docs/emulator-policies.md).
    Policy(crate::policy_cli::Policy),
}

#[derive(Debug, Args)]
pub struct StateDir {
    /// Where the CA, the certificates and the registry live (created if missing).
    #[arg(long, value_name = "DIR", default_value = "./emulator-state")]
    pub state_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct Quiet {
    /// Log nothing on stderr (what a command prints on stdout is unchanged).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct Serve {
    #[command(flatten)]
    pub state: StateDir,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// Port to listen on; 0 picks a free one (see --ready-file).
    #[arg(long, default_value_t = 8883)]
    pub port: u16,
    /// Serve template NAME from FILE (repeatable); without it the sample template is served as
    /// FleetTemplate.
    #[arg(long = "template", value_name = "NAME=FILE", value_parser = template)]
    pub templates: Vec<(String, PathBuf)>,
    /// The thing types, thing groups, billing groups and policies that exist (JSON, see the
    /// README); a template referencing another fails the request, as on AWS.
    #[arg(long, value_name = "FILE")]
    pub account: Option<PathBuf>,
    /// The claim certificates' policy document (JSON; <region>, <account> and <templatename>
    /// are filled in); AWS's sample claim policy for each template by default.
    #[arg(long, value_name = "FILE")]
    pub claim_policy: Option<PathBuf>,
    /// Run COMMAND (sh -c) as template NAME's pre-provisioning hook (repeatable): AWS's input
    /// JSON on its stdin, its answer JSON on its stdout, 5 seconds to answer.
    #[arg(long = "hook", value_name = "NAME=COMMAND", value_parser = hook)]
    pub hooks: Vec<(String, String)>,
    /// Write the port to PATH once listening (removed on exit).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    #[command(flatten)]
    pub quiet: Quiet,
    /// Limit API (CreateKeysAndCertificate, CreateCertificateFromCsr, RegisterThing) to TPS
    /// requests per second, a token bucket (repeatable; off by default).
    #[arg(long = "rate-limit", value_name = "API=TPS", value_parser = rate_limit)]
    pub rate_limits: Vec<(Api, f64)>,
    /// How a throttled request is answered: a 429 ThrottlingException rejection, or a closed
    /// connection.
    #[arg(long, value_enum, default_value_t = Throttle::Reject)]
    pub throttle: Throttle,
    /// How long device certificates are valid (notAfter - notBefore), as AWS IoT's certificate
    /// provider allows: a whole number with s, m, h or d (30s, 10m, 365d). By default they
    /// expire at the end of 2049, as AWS IoT's own.
    #[arg(long, value_name = "DURATION", value_parser = validity)]
    pub certificate_validity: Option<std::time::Duration>,
    /// Issue device certificates from an intermediate CA under the root (created once in the
    /// state directory); certificatePem then holds the certificate and the intermediate's, and
    /// devices must send both to connect.
    #[arg(long)]
    pub intermediate_ca: bool,
}

impl Serve {
    /// How device certificates are issued, from --certificate-validity and --intermediate-ca.
    pub fn device_certificates(&self) -> fleetprov_emulator::ca::DeviceCertificates {
        fleetprov_emulator::ca::DeviceCertificates {
            validity: self.certificate_validity,
            intermediate: self.intermediate_ca,
        }
    }
}

#[derive(Debug, Args)]
pub struct Claim {
    #[command(flatten)]
    pub state: StateDir,
    /// Where to write the certificate.
    #[arg(long, value_name = "FILE")]
    pub out_cert: PathBuf,
    /// Where to write the private key (0600).
    #[arg(long, value_name = "FILE")]
    pub out_key: PathBuf,
    /// Validity in seconds; 300 gives AWS-like temporary claims. The default is 10 years.
    #[arg(long, value_name = "SECS", default_value_t = 3650 * 86_400,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub valid_for: u64,
    /// The certificate's subject common name.
    #[arg(long, value_name = "CN", default_value = "fleetprov emulator claim")]
    pub common_name: String,
}

#[derive(Debug, Args)]
pub struct Things {
    #[command(flatten)]
    pub state: StateDir,
}

#[derive(Debug, Args)]
pub struct Respond {
    /// The broker's host name.
    #[arg(long)]
    pub host: String,
    /// The broker's port.
    #[arg(long)]
    pub port: u16,
    /// The CA that signed the broker's certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    /// The client certificate to connect with.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Its private key.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    #[command(flatten)]
    pub state: StateDir,
    /// Serve template NAME from FILE (repeatable), as for serve.
    #[arg(long = "template", value_name = "NAME=FILE", value_parser = template)]
    pub templates: Vec<(String, PathBuf)>,
    /// The MQTT client id.
    #[arg(
        long,
        value_name = "ID",
        default_value = "fleetprov-emulator-responder"
    )]
    pub client_id: String,
    /// Write "subscribed" to PATH once the request topics are subscribed (removed on exit).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    #[command(flatten)]
    pub quiet: Quiet,
}

/// `--throttle`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Throttle {
    Reject,
    Disconnect,
}

impl From<Throttle> for ThrottleMode {
    fn from(t: Throttle) -> ThrottleMode {
        match t {
            Throttle::Reject => ThrottleMode::Reject,
            Throttle::Disconnect => ThrottleMode::Disconnect,
        }
    }
}

fn template(value: &str) -> Result<(String, PathBuf), String> {
    let (name, file) = value
        .split_once('=')
        .ok_or("expected NAME=FILE".to_owned())?;
    if !fleetprov_emulator::valid_template_name(name) {
        return Err(format!(
            "{name:?}: names are 1-36 characters of A-Z a-z 0-9 _ -"
        ));
    }
    Ok((name.to_owned(), PathBuf::from(file)))
}

fn hook(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(name, command)| (name.to_owned(), command.to_owned()))
        .ok_or("expected NAME=COMMAND".to_owned())
}

/// `30s`, `10m`, `12h`, `365d`: at least a second, at most 100 years.
fn validity(value: &str) -> Result<std::time::Duration, String> {
    let unit_at = value
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{value:?}: give a unit: s, m, h or d (e.g. 30s, 10m, 365d)"))?;
    let (number, unit) = value.split_at(unit_at);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{value:?}: expected a whole number then s, m, h or d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{value:?}: the unit must be s, m, h or d")),
    };
    let secs = n
        .checked_mul(scale)
        .filter(|s| (1..=100 * 365 * 86_400).contains(s))
        .ok_or_else(|| format!("{value:?}: must be between 1 second and 100 years"))?;
    Ok(std::time::Duration::from_secs(secs))
}

fn rate_limit(value: &str) -> Result<(Api, f64), String> {
    throttle::parse_rate_limit(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn values_given_twice_keep_the_last_and_lists_keep_all() {
        let cli = Cli::try_parse_from([
            "fleetprov-emulator",
            "serve",
            "--port=1",
            "--port",
            "2",
            "--template",
            "A=a.json",
            "--template=B=b.json",
            "--throttle",
            "disconnect",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.port, 2);
        assert_eq!(
            s.templates,
            [
                ("A".to_owned(), PathBuf::from("a.json")),
                ("B".to_owned(), PathBuf::from("b.json"))
            ]
        );
        assert_eq!(s.throttle, Throttle::Disconnect);
        assert_eq!(s.state.state_dir, PathBuf::from("./emulator-state"));
        assert!(!s.quiet.quiet);
    }

    #[test]
    fn certificate_validity_and_intermediate_ca() {
        let serve = |args: &[&str]| {
            let cli =
                Cli::try_parse_from(["fleetprov-emulator", "serve"].iter().chain(args)).unwrap();
            let Command::Serve(s) = cli.command else {
                panic!("not serve")
            };
            s.device_certificates()
        };
        let default = serve(&[]);
        assert_eq!((default.validity, default.intermediate), (None, false));
        for (arg, secs) in [
            ("30s", 30),
            ("10m", 600),
            ("12h", 43_200),
            ("365d", 31_536_000),
        ] {
            let d = serve(&["--certificate-validity", arg]);
            assert_eq!(
                d.validity,
                Some(std::time::Duration::from_secs(secs)),
                "{arg}"
            );
        }
        let d = serve(&["--intermediate-ca", "--certificate-validity=1d"]);
        assert!(d.intermediate);
        assert_eq!(d.validity, Some(std::time::Duration::from_secs(86_400)));
        let e = validity("30").unwrap_err();
        assert!(e.contains("unit"), "{e}");
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["serve", "--template", "bad/name=x.json"][..],
            &["serve", "--template", "nofile"],
            &["serve", "--hook", "nocommand"],
            &["serve", "--rate-limit", "RegisterThing=0"],
            &["serve", "--rate-limit", "Nothing=1"],
            &["serve", "--throttle", "drop"],
            &["serve", "--bind", "localhost"],
            &["serve", "--port", "65536"],
            &["serve", "--certificate-validity", "30"],
            &["serve", "--certificate-validity", "0s"],
            &["serve", "--certificate-validity", "10w"],
            &["serve", "--certificate-validity", "-5m"],
            &["serve", "--certificate-validity", "1.5h"],
            &["serve", "--certificate-validity", "99999999999d"],
            &[
                "claim",
                "--out-cert",
                "c",
                "--out-key",
                "k",
                "--valid-for",
                "0",
            ],
            &["claim", "--out-cert", "c"],
            &[
                "respond", "--host", "h", "--ca", "a", "--cert", "c", "--key", "k",
            ],
        ] {
            let err = Cli::try_parse_from(
                std::iter::once("fleetprov-emulator").chain(args.iter().copied()),
            )
            .expect_err(&format!("{args:?} parsed"));
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }
}
