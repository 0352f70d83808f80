//! The pure core: Service Tags in, a firewall plan out. Nothing here does I/O, reads the clock
//! or the environment, or awaits; every function takes values and returns values, which is what
//! lets it be tested to the bone (tables, properties, brute-force oracles, golden files).
//!
//! - [`service_tags`]: the one model of a Service Tags document and its parser (both formats).
//! - [`cidr`]: IPv4 prefixes, reserved ranges, lossless collapse.
//! - [`fit`]: the exact fit of a prefix set into a rule budget.
//! - [`kind`]: the firewall kinds (Key Vault, Storage, Container Registry): their rules' limits,
//!   forms and costs.
//! - [`desired`]: selection → the rules a vault should hold.
//! - [`live`]: a vault's firewall as ARM returns it.
//! - [`gate`]: the safety check every firewall write passes, and the verify after it.
//! - [`grant`]: just-in-time grants: the address a grant may open, its TTL, the room it needs.
//! - [`plan`]: desired × live × last-applied (and live grants) → the plan, and its guards.
//! - [`render`]: plans and tag listings as text and JSON.
//! - [`profiles`]: built-in selections (names for sets of tags); it imports no other module.
//! - [`text`]: how numbers are written for people; it imports no other module.
//!
//! The modules are layered, and each imports only modules below it, so that a lower one can be
//! read and tested without the ones above and no change up the stack can reach down:
//! `text`, `json`, `cidr` → `grant`, `service_tags` → `fit` → `kind` → `desired` → `plan`, `live` → `gate`, `render`.
//! A module that needs to say what one above does with it says so in prose, without a doc link,
//! which would tie it to that module all the same.

pub mod cidr;
pub mod desired;
pub mod fit;
pub mod gate;
pub mod grant;
mod json;
pub mod kind;
pub mod live;
pub mod plan;
pub mod profiles;
pub mod render;
pub mod service_tags;
pub mod text;
