//! Provisions one device from Rust: connect with the claim, CreateKeysAndCertificate,
//! RegisterThing with the sample template's parameters, then print what was created.
//!
//! ```sh
//! cargo run --example provision -- ENDPOINT PORT CA_FILE CLAIM_CERT CLAIM_KEY SERIAL_NUMBER
//! ```
//! Against `fleetprov-emulator serve`, the files are `ca.pem`, `claim-cert.pem` and
//! `claim-key.pem` in its state directory.

use std::process::ExitCode;

use fleetprov::{Client, ClientOptions, Credentials, ErrorKind, Pem, RegisterThingRequest};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, port, ca, cert, key, serial] = args.as_slice() else {
        eprintln!("usage: provision ENDPOINT PORT CA_FILE CLAIM_CERT CLAIM_KEY SERIAL_NUMBER");
        return ExitCode::from(2);
    };
    let Ok(port) = port.parse() else {
        eprintln!("PORT must be a number from 1 to 65535");
        return ExitCode::from(2);
    };

    let mut opts = ClientOptions::new(endpoint.as_str());
    opts.port = port;
    opts.ca = Some(Pem::file(ca));
    opts.credentials = Some(Credentials::pem(Pem::file(cert), Pem::file(key)));

    match provision(opts, serial).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A service rejection carries AWS's own fields.
            if let (ErrorKind::Rejected, Some(r)) = (e.kind, &e.rejection) {
                eprintln!(
                    "rejected: {} {}: {}",
                    r.status_code, r.error_code, r.error_message
                );
            } else {
                eprintln!("failed ({}): {}", e.kind, e.message);
            }
            ExitCode::FAILURE
        }
    }
}

async fn provision(opts: ClientOptions, serial: &str) -> Result<(), fleetprov::Error> {
    let client = Client::connect(opts).await?;
    let created = client.create_keys_and_certificate().await?;
    // created.certificate_pem and created.private_key are the device's new identity: store
    // them (the key is a Zeroizing<String>, wiped when dropped). Never print the key.
    println!("certificate {}", created.certificate_id);

    let request = RegisterThingRequest {
        certificate_ownership_token: created.certificate_ownership_token.clone(),
        parameters: [
            ("SerialNumber".to_owned(), serial.to_owned()),
            ("DeviceLocation".to_owned(), "Seattle".to_owned()),
        ]
        .into(),
    };
    let thing = client.register_thing("FleetTemplate", &request).await?;
    println!("thing {}", thing.thing_name);
    for (name, value) in &thing.device_configuration {
        println!("  {name} = {value}");
    }
    client.disconnect().await;
    Ok(())
}
