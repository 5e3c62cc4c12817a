//! Issuer chains (issue 20, item 4): a `certificatePem` holding the certificate and its
//! intermediates is stored whole and sent whole, over real TLS against an emulator that issues
//! device certificates from an intermediate CA (and trusts only its root).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use fleetprov::client::{Client, Credentials, MqttVersion, Pem};
use fleetprov::protocol::TemplateName;
use fleetprov::provision::{provision, ProvisionOptions};
use fleetprov_emulator::ca::DeviceCertificates;
use fleetprov_emulator::cert::certificate_id;
use fleetprov_testkit::env::{make_csr, params, Env};

async fn intermediate_env() -> Env {
    Env::start_with(|cfg| {
        cfg.device_certificates = DeviceCertificates {
            validity: None,
            intermediate: true,
        }
    })
    .await
}

fn chain_of(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_issued_from_an_intermediate_ca_connects_with_its_chain() {
    let env = intermediate_env().await;
    for version in [MqttVersion::V5, MqttVersion::V311] {
        let store = env.dir.path().join(format!("identity-{version:?}"));
        let mut o = ProvisionOptions::new(
            env.claim_opts(version),
            TemplateName::new("FleetTemplate").unwrap(),
            &store,
        );
        o.parameters = params(&format!("{version:?}"));
        // provision() itself proves the identity by connecting with the stored files, the
        // first time and when it reuses them.
        let p = provision(o.clone()).await.unwrap();
        let again = provision(o).await.unwrap();
        assert!(again.reused && again.files == p.files, "{version:?}");
        let stored = std::fs::read(&p.files.certificate).unwrap();
        let chain = chain_of(&stored);
        assert_eq!(
            chain.len(),
            2,
            "the store kept {} certificate(s)",
            chain.len()
        );
        assert_eq!(certificate_id(&chain[0]), p.certificate_id);
        assert!(std::str::from_utf8(&stored).unwrap().ends_with(
            &std::fs::read_to_string(env.dir.path().join("intermediate-ca.pem")).unwrap()
        ));

        // The library's client connects with the stored chain...
        let mut device = env.claim_opts(version);
        device.credentials = Some(Credentials::pem(
            Pem::file(&p.files.certificate),
            Pem::file(&p.files.private_key),
        ));
        device.client_id = Some(p.client_id.clone());
        let c = Client::connect(device.clone())
            .await
            .unwrap_or_else(|e| panic!("{version:?}: the stored chain was refused: {e}"));
        c.disconnect().await;

        // ...and the leaf alone does not: the server trusts only the root, so the
        // intermediate must have gone out in the handshake.
        let leaf_only = env.dir.path().join(format!("leaf-{version:?}.pem"));
        let leaf = stored
            .split_inclusive(|b| *b == b'\n')
            .scan(false, |done, line| {
                let keep = !*done;
                if line.starts_with(b"-----END CERTIFICATE-----") {
                    *done = true;
                }
                Some(keep.then(|| line.to_vec()))
            })
            .flatten()
            .flatten()
            .collect::<Vec<u8>>();
        assert_eq!(chain_of(&leaf).len(), 1);
        std::fs::write(&leaf_only, leaf).unwrap();
        device.credentials = Some(Credentials::pem(
            Pem::file(&leaf_only),
            Pem::file(&p.files.private_key),
        ));
        let refused = Client::connect(device).await;
        assert!(
            refused.is_err(),
            "{version:?}: connected without the intermediate"
        );
    }
}

/// The client, asked directly: CreateCertificateFromCsr's reply holds leaf + intermediate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_certificate_from_csr_returns_the_chain() {
    let env = intermediate_env().await;
    let client = Client::connect(env.claim_opts(MqttVersion::V5))
        .await
        .unwrap();
    let csr = make_csr("chain");
    let created = client.create_certificate_from_csr(&csr.pem).await.unwrap();
    client.disconnect().await;
    let chain = chain_of(created.certificate_pem.as_bytes());
    assert_eq!(chain.len(), 2);
    assert_eq!(certificate_id(&chain[0]), created.certificate_id);
}
