//! `fleetprov-emulator policy check`: the command line of [`fleetprov_emulator::access::check`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use fleetprov_emulator::access::check::{check, Asker, Question};
use fleetprov_emulator::policy::Action;

#[derive(Debug, Args)]
pub struct Policy {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Would this certificate and client id be allowed an action on a resource, and which policy
    /// statement decides? Prints "allowed" or "denied" first; exits 0 if allowed, 1 if denied,
    /// 2 if the question cannot be answered.
    Check(Check),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("asker").required(true).args(["cert", "claim"])))]
pub struct Check {
    /// The state directory of the server whose registry knows the certificate.
    #[arg(long, value_name = "DIR", default_value = "./emulator-state")]
    pub state_dir: PathBuf,
    /// The certificate (PEM) that asks: its policies are those its registration attached, or the
    /// claim policy if it is a claim.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Ask as a claim certificate (the claim policy).
    #[arg(long)]
    pub claim: bool,
    /// The MQTT client id (${iot:ClientId}).
    #[arg(long, value_name = "ID")]
    pub client_id: String,
    /// The thing whose name, type and attributes the iot:Connection.Thing variables give; by
    /// default the certificate's thing if its name is the client id.
    #[arg(long, value_name = "NAME")]
    pub thing: Option<String>,
    /// iot:Connect, iot:Publish, iot:Subscribe or iot:Receive.
    #[arg(long, value_name = "ACTION", value_parser = action)]
    pub action: Action,
    /// The client id, topic or topic filter the action is on, or its full ARN.
    #[arg(long, value_name = "TOPIC_OR_ARN")]
    pub resource: String,
    /// The account file the server runs with (ARNs, named policy documents).
    #[arg(long, value_name = "FILE")]
    pub account: Option<PathBuf>,
    /// The claim policy the server runs with; the sample claim policy by default.
    #[arg(long, value_name = "FILE")]
    pub claim_policy: Option<PathBuf>,
    /// A template the server serves (repeatable; NAME or NAME=FILE, only the name counts); the
    /// claim policy is instantiated for each. FleetTemplate by default.
    #[arg(long = "template", value_name = "NAME")]
    pub templates: Vec<String>,
}

fn action(value: &str) -> Result<Action, String> {
    Action::from_name(value).ok_or_else(|| {
        format!("{value:?}: expected iot:Connect, iot:Publish, iot:Subscribe or iot:Receive")
    })
}

pub fn run(p: Policy) -> ExitCode {
    let PolicyCommand::Check(c) = p.command;
    let mut templates: Vec<String> = c
        .templates
        .iter()
        .map(|t| t.split_once('=').map_or(t.as_str(), |(n, _)| n).to_owned())
        .collect();
    if templates.is_empty() {
        templates.push(fleetprov_emulator::SEED_TEMPLATE_NAME.to_owned());
    }
    let question = Question {
        state_dir: c.state_dir,
        account: c.account,
        claim_policy: c.claim_policy,
        templates,
        asker: match c.cert {
            Some(path) => Asker::Cert(path),
            None => Asker::Claim,
        },
        client_id: c.client_id,
        thing: c.thing,
        action: c.action,
        resource: c.resource,
    };
    match check(&question) {
        Ok(answer) => {
            println!(
                "{}",
                if answer.decision.allowed {
                    "allowed"
                } else {
                    "denied"
                }
            );
            println!("action:   {}", question.action);
            println!("resource: {}", answer.resource);
            println!("decision: {}", answer.decision);
            println!("policies: {}", answer.policies.join(", "));
            for note in &answer.notes {
                println!("note:     {note}");
            }
            if answer.decision.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("fleetprov-emulator: policy check: {e}");
            ExitCode::from(2)
        }
    }
}
