//! Dropping provision()'s future cancels the run: at every step the store keeps the previous
//! identity or none (beside it at most the dropped run's create result or pending identity,
//! which the next run reports or verifies), connections close, and the next run works. Over real TLS against the
//! emulator; each drop is driven from the progress sink, never by a timer.

use fleetprov_testkit::env as common;
use fleetprov_testkit::file_names;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{provision_options, wait_until, Env};
use fleetprov::provision::store::{Found, IdentityStore, Pending};
use fleetprov::provision::{
    provision, Progress, ProgressFuture, ProvisionOptions, Provisioned, Step,
};
use tokio::net::{TcpListener, TcpStream};

/// A TCP forwarder to the emulator that counts the connections open through it.
struct Counted {
    port: u16,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn counted(target: u16) -> Counted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&open);
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
                count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Counted { port, open, task }
}

fn options(env: &Env, port: u16, store: &std::path::Path) -> ProvisionOptions {
    let mut o = provision_options(env, store, "1");
    o.claim.port = port;
    o
}

/// Where to drop the run: the `nth` event of `step`.
#[derive(Debug, Clone, Copy)]
struct At {
    step: Step,
    nth: usize,
}

const AT_EVERY_STEP: [At; 6] = [
    At {
        step: Step::Connecting,
        nth: 1,
    },
    At {
        step: Step::Creating,
        nth: 1,
    },
    At {
        step: Step::Registering,
        nth: 1,
    },
    At {
        step: Step::Saving,
        nth: 1,
    },
    At {
        step: Step::Verifying,
        nth: 1,
    },
    // The device connection, made while verifying.
    At {
        step: Step::Connecting,
        nth: 2,
    },
];

/// Runs `o` and drops it at `at`. `park`: the sink never returns, so the run stops exactly at
/// the event; otherwise the sink returns and the run goes on to its next wait (store work
/// then may be running on the blocking pool when the future is dropped).
async fn drop_at(mut o: ProvisionOptions, at: At, park: bool) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = Mutex::new(Some(tx));
    let seen = AtomicUsize::new(0);
    o.progress = Some(Arc::new(move |p: Progress| -> ProgressFuture {
        if p.step == at.step && seen.fetch_add(1, Ordering::SeqCst) + 1 == at.nth {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(());
                if park {
                    return Box::pin(std::future::pending());
                }
            }
        }
        Box::pin(async {})
    }));
    let run = provision(o);
    tokio::select! {
        biased;
        _ = rx => {}
        r = run => panic!("the run ended before {at:?}: {r:?}"),
    }
}

fn files_of(p: &Provisioned) -> Vec<String> {
    let mut v: Vec<String> = [
        &p.files.certificate,
        &p.files.private_key,
        &p.files.metadata,
    ]
    .iter()
    .map(|f| f.file_name().unwrap().to_str().unwrap().to_owned())
    .collect();
    v.sort();
    v
}

async fn all_closed(relay: &Counted, at: At) {
    let open = Arc::clone(&relay.open);
    wait_until(
        &format!("the connections to close after a drop at {at:?}"),
        Duration::from_secs(10),
        move || open.load(Ordering::SeqCst) == 0,
    )
    .await;
}

/// What a dropped run left beside the committed identity, read after a parked drop: the
/// certificate id of its create result staged before RegisterThing (`registering.json`) and
/// of its identity registered but not verified yet (`pending.json`). Any other file is an
/// error.
fn left_by_drop(store: &std::path::Path, committed: &[String], at: At) -> Left {
    let extra: Vec<String> = file_names(store)
        .into_iter()
        .filter(|n| !committed.contains(n))
        .collect();
    assert!(
        extra.iter().all(|n| n == "registering.json"
            || n == "pending.json"
            || n.starts_with("certificate-")
            || n.starts_with("private-key-")),
        "{at:?}: {extra:?}"
    );
    let s = IdentityStore::open(store).unwrap();
    let registering = match s.registering("localhost").unwrap() {
        Some(Ok(r)) => Some(r.certificate_id),
        None => None,
        Some(Err((id, why))) => panic!("{at:?}: unusable create result {id}: {why}"),
    };
    let pending = match s.pending("localhost").unwrap() {
        Some(Pending::Usable(p)) => Some(p.metadata.certificate_id.clone()),
        None => None,
        Some(Pending::Unusable { why, .. }) => panic!("{at:?}: unusable pending: {why}"),
    };
    if registering.is_none() && pending.is_none() {
        assert!(extra.is_empty(), "{at:?}: {extra:?}");
    }
    Left {
        registering,
        pending,
    }
}

#[derive(Debug, Default)]
struct Left {
    registering: Option<String>,
    pending: Option<String>,
}

/// The steps after which a dropped run may have left an identity pending (registered, saved,
/// not verified): the next run verifies and keeps it.
fn may_leave_pending(at: At) -> bool {
    matches!(at.step, Step::Saving | Step::Verifying)
        || (at.step == Step::Connecting && at.nth == 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_at_any_step_keeps_the_previous_identity() {
    let env = Env::start().await;
    let relay = counted(env.emu.port()).await;
    let store = env.dir.path().join("identity");
    let mut current = provision(options(&env, relay.port, &store)).await.unwrap();
    all_closed(&relay, AT_EVERY_STEP[0]).await;
    for park in [true, false] {
        for at in AT_EVERY_STEP {
            let mut o = options(&env, relay.port, &store);
            o.force = true;
            drop_at(o, at, park).await;
            all_closed(&relay, at).await;
            let mut left = Left::default();
            if park {
                // Nothing runs in the background: the store can be read at once.
                let s = IdentityStore::open(&store).unwrap();
                let Found::Usable(kept) = s.load("localhost").unwrap() else {
                    panic!("the identity was lost by a drop at {at:?}")
                };
                assert_eq!(
                    kept.metadata.certificate_id, current.certificate_id,
                    "{at:?}"
                );
                // Beside it, at most what the dropped run had obtained: its create result
                // (staged before RegisterThing) or its identity pending verification.
                left = left_by_drop(&store, &files_of(&current), at);
            }
            // The next run (waiting for any store work of the dropped one) reuses the
            // identity, or verifies and keeps the dropped run's pending one; a create result
            // it left is reported as abandoned.
            let again = provision(options(&env, relay.port, &store)).await.unwrap();
            assert!(again.reused, "{at:?}");
            assert_eq!(file_names(&store), files_of(&again), "{at:?}");
            if again.certificate_id != current.certificate_id {
                assert!(may_leave_pending(at), "{at:?}: {again:?}");
                if park {
                    assert_eq!(Some(&again.certificate_id), left.pending.as_ref(), "{at:?}");
                }
            } else {
                assert_eq!(left.pending, None, "{at:?}");
            }
            if let Some(id) = left.registering {
                assert_eq!(again.abandoned_certificates, [id], "{at:?}");
            }
            current = again;
        }
    }
    // And a forced run still replaces it.
    let mut o = options(&env, relay.port, &store);
    o.force = true;
    let second = provision(o).await.unwrap();
    assert_ne!(second.certificate_id, current.certificate_id);
    assert_eq!(file_names(&store), files_of(&second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_at_any_step_of_a_first_run_leaves_no_identity() {
    let env = Env::start().await;
    let relay = counted(env.emu.port()).await;
    for park in [true, false] {
        for (i, at) in AT_EVERY_STEP.into_iter().enumerate() {
            let store = env.dir.path().join(format!("identity-{park}-{i}"));
            drop_at(options(&env, relay.port, &store), at, park).await;
            all_closed(&relay, at).await;
            let mut left = Left::default();
            if park {
                let s = IdentityStore::open(&store).unwrap();
                assert!(
                    matches!(s.load("localhost").unwrap(), Found::Nothing),
                    "{at:?}"
                );
                left = left_by_drop(&store, &[], at);
            }
            // The next run provisions, going on with the dropped run's create result (the
            // same certificate, or it is reported when its token was spent), or verifies the
            // dropped run's pending identity.
            let next = provision(options(&env, relay.port, &store)).await.unwrap();
            assert_eq!(file_names(&store), files_of(&next), "{at:?}");
            if next.reused {
                assert!(may_leave_pending(at), "{at:?}: {next:?}");
                if park {
                    assert_eq!(Some(&next.certificate_id), left.pending.as_ref(), "{at:?}");
                }
            } else {
                assert_eq!(left.pending, None, "{at:?}");
            }
            if let Some(id) = left.registering {
                assert!(
                    next.certificate_id == id || next.abandoned_certificates == [id.clone()],
                    "{at:?}: {next:?}"
                );
            }
        }
    }
}
