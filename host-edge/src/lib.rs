//! verge-edge: a verge component, made into a Lambda@Edge function.
//!
//! [`compose`] plugs the tract `wasi:nn` provider component into the
//! component's `wasi:nn` imports; [`transpile`] turns the result into
//! JavaScript and core Wasm for Node; [`package`] bundles that with the shim,
//! the models and a manifest into a deterministic zip, checked against the
//! trigger's [`quota`]; [`cloudformation`] writes the template to deploy it,
//! or one for several packages on one cache behaviour. [`fit`] is the dry
//! run: every trigger × engine, built in memory and judged.

pub mod cloudformation;
pub mod compose;
pub mod fit;
pub mod package;
pub mod quota;
pub mod transpile;

/// Hex SHA-256 of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}
