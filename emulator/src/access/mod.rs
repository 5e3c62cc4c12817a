//! Who may do what on the endpoint: [`store`] holds the policies a connection is held to (the
//! claim policy, the account's named documents, those a template attached in the registry) and
//! answers a connection's questions; [`check`] asks the same questions of a state directory
//! offline, for `fleetprov-emulator policy check`. The policy language itself is
//! [`crate::policy`]'s.

pub mod check;
pub mod store;
