//! The C surface against a broker that misbehaves on purpose (the scripted broker of the test
//! kit), for what only the C surface has: an operation may start before the connection is up.
//! The library is loaded from the libfleetprov.so of this build, so these are the same
//! exported functions a C program calls.

mod capi;

use fleetprov_testkit::hostile::*;

/// The C surface accepts an operation before the connection is up. The connection then ends
/// right after CONNACK (DISCONNECT 0x89 Server busy, with a reason string, in the same write):
/// the waiting operation gets FP_ERR_DISCONNECTED with the broker's reason, not
/// FP_ERR_NOT_CONNECTED without a cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_operation_started_before_connack_keeps_the_cause() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let mut out = connack_ok(true);
            out.extend(disconnect_v5(
                0x89,
                &props(&[prop::string(prop::REASON_STRING, "busy after CONNACK")]),
            ));
            c.accept_connect(&out).await?;
            c.hold_open().await
        })
        .await;
        let mut client = capi::CClient::connect_and_create_keys(b.port, ca_pem(), true);
        let (code, message) = client.outcome(CASE_LIMIT).await;
        assert_eq!(code, capi::FP_ERR_DISCONNECTED, "{message:?}");
        assert!(
            squash(&message).contains(&squash("busy after CONNACK")),
            "{message:?}"
        );
    })
    .await;
}

/// A malformed packet while an operation waits: the library closes the connection, and the
/// C caller sees FP_ERR_PROTOCOL (not FP_ERR_CANCELLED "disconnected by its owner").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_malformed_packet_is_fp_err_protocol() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let (topic, pkid) = c.up_to_request(&connack_ok(true)).await?;
            c.send(&puback(true, pkid, None)).await?;
            let mut bad = publish0(true, &format!("{topic}/accepted"), b"{}");
            bad[0] = 0x36;
            c.send(&bad).await?;
            c.hold_open().await
        })
        .await;
        let mut client = capi::CClient::connect_and_create_keys(b.port, ca_pem(), true);
        let (code, message) = client.outcome(CASE_LIMIT).await;
        assert_eq!(code, capi::FP_ERR_PROTOCOL, "{message:?}");
    })
    .await;
}

/// PUBACK 0x87 through the C surface: FP_ERR_PUBLISH_REFUSED with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_puback_not_authorized_is_fp_err_publish_refused() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let (_, pkid) = c.up_to_request(&connack_ok(true)).await?;
            c.send(&puback(true, pkid, Some(0x87))).await?;
            c.hold_open().await
        })
        .await;
        let mut client = capi::CClient::connect_and_create_keys(b.port, ca_pem(), true);
        let (code, message) = client.outcome(CASE_LIMIT).await;
        assert_eq!(code, capi::FP_ERR_PUBLISH_REFUSED, "{message:?}");
        assert!(
            message.to_lowercase().contains("not authorized"),
            "{message:?}"
        );
    })
    .await;
}

/// A reply followed by DISCONNECT in one write, through the C surface.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_reply_then_disconnect_succeeds() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let (topic, pkid) = c.up_to_request(&connack_ok(true)).await?;
            let mut out = puback(true, pkid, None);
            out.extend(publish0(
                true,
                &format!("{topic}/accepted"),
                &create_keys_accepted(),
            ));
            out.extend(disconnect_v5(0x8b, &[0]));
            c.send(&out).await
        })
        .await;
        let mut client = capi::CClient::connect_and_create_keys(b.port, ca_pem(), true);
        let (code, message) = client.outcome(CASE_LIMIT).await;
        assert_eq!(code, capi::FP_OK, "{message:?}");
    })
    .await;
}

/// A PUBLISH with an empty topic and an alias never set up: a protocol error the library
/// itself closes the connection for; the C caller must see FP_ERR_PROTOCOL, not
/// FP_ERR_CANCELLED "disconnected by its owner".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_unknown_alias_is_fp_err_protocol() {
    bounded(async {
        let b = Broker::start(|mut c| async move {
            let (_, pkid) = c.up_to_request(&connack_ok(true)).await?;
            let mut out = puback(true, pkid, None);
            let alias = props(&[prop::u16(prop::TOPIC_ALIAS, 5)]);
            out.extend(publish(true, "", 0, 0, &alias, b"{}"));
            c.send(&out).await?;
            c.hold_open().await
        })
        .await;
        let mut client = capi::CClient::connect_and_create_keys(b.port, ca_pem(), true);
        let (code, message) = client.outcome(CASE_LIMIT).await;
        assert_eq!(code, capi::FP_ERR_PROTOCOL, "{message:?}");
    })
    .await;
}
