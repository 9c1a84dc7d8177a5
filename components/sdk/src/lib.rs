//! `verge-sdk`: what a verge component needs besides its own logic.
//!
//! * [`Handler`] and [`export!`]: implement one function, export it; the
//!   bindings of `wit/` are generated once, here ([`bindings`]), so a component
//!   crate depends on this crate only (no `wit_bindgen::generate!` of its own).
//! * [`Tensor`]: typed tensors (f32, i32, i64, u8) whose shape and element type
//!   are checked when built and when read back.
//! * [`Model`]: a `wasi:nn` graph loaded by name once per instance, run with
//!   named tensors; `wasi:nn` errors become [`Error::Model`] with code and message.
//! * [`settings`]: per-deployment settings from `wasi:config`, parsed to a type.
//! * [`Request`], [`Outcome`], [`Error`]: plain Rust mirrors of the WIT types
//!   with helpers (`Outcome::json`, `Outcome::annotate`, `Outcome::defer`).
//!
//! Everything builds natively too, so a component's own logic can be unit
//! tested with `cargo test`: there, `Model::load` fails with `Error::Internal`
//! and every setting is unset (defaults apply); `host` and `bindings` exist
//! only on `wasm32`.
//!
//! ```
//! use verge_sdk::{Error, Handler, Model, Outcome, Request, Tensor};
//!
//! struct Doubler;
//!
//! impl Handler for Doubler {
//!     fn handle(req: Request) -> Result<Outcome, Error> {
//!         let x: f32 = req.text()?.trim().parse().map_err(|_| Error::invalid("a number"))?;
//!         let out = Model::load("double")?.run(&[("x", Tensor::new(&[1, 1], &[x])?)])?;
//!         let y = out.first()?.values::<f32>()?;
//!         Ok(Outcome::json(200, format!("{{\"y\":{}}}", y[0])))
//!     }
//! }
//!
//! verge_sdk::export!(Doubler);
//! ```

// So that paths generated for `verge_sdk::...` resolve inside this crate too.
extern crate self as verge_sdk;

mod error;
mod json;
mod message;
mod model;
pub mod settings;
mod tensor;

pub use error::Error;
pub use json::{json_number, json_string};
pub use message::{Outcome, Request, Response};
pub use model::{Model, Outputs};
pub use tensor::{Element, ElementType, Tensor};

/// What a component implements: one request in, an outcome or an error out.
pub trait Handler {
    fn handle(req: Request) -> Result<Outcome, Error>;
}

/// The bindings of `wit/` (world `verge:inference/component`), generated once
/// for every component. Reach for them only for what the SDK does not wrap
/// (`wasi:keyvalue`, the raw `wasi:nn` resources).
#[cfg(target_arch = "wasm32")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "verge:inference/component",
        generate_all,
        pub_export_macro: true,
        default_bindings_module: "verge_sdk::bindings",
        runtime_path: "verge_sdk::__wit_bindgen::rt",
    });
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Where and how the component runs (`verge:inference/host`).
#[cfg(target_arch = "wasm32")]
pub mod host {
    pub use crate::bindings::verge::inference::host::{
        Limits, Placement, get_limits as limits, get_placement as placement, remaining_ms,
    };
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub fn __handle<H: Handler>(
    req: bindings::verge::inference::types::Request,
) -> Result<bindings::verge::inference::types::Outcome, bindings::verge::inference::types::Error> {
    H::handle(req.into()).map(Into::into).map_err(Into::into)
}

/// Exports a [`Handler`] as the component's `verge:inference/handler`.
#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! export {
    ($ty:ident) => {
        const _: () = {
            use $crate::bindings::exports::verge::inference::handler as __handler;
            use $crate::bindings::verge::inference::types as __types;
            impl __handler::Guest for $ty {
                fn handle(req: __types::Request) -> Result<__types::Outcome, __types::Error> {
                    $crate::__handle::<$ty>(req)
                }
            }
        };
        $crate::bindings::export!($ty);
    };
}

/// Exports a [`Handler`] (a no-op outside `wasm32`, so that a component's
/// logic builds and tests natively).
#[cfg(not(target_arch = "wasm32"))]
#[macro_export]
macro_rules! export {
    ($ty:ident) => {
        const _: fn() = || {
            fn assert_handler<H: $crate::Handler>() {}
            assert_handler::<$ty>();
        };
    };
}
