//! Image decoding and resampling shared by verge's image components
//! (`image-classify`, `face-detect`): PNG and JPEG into 8-bit RGB, and the two
//! bilinear samplers their models' preprocessing needs. A plain library: it
//! exports nothing to Wasm and builds natively for the components' unit tests.

mod decode;
mod resample;

pub use decode::{MAX_PIXELS, Rgb, decode, sniff};
pub use resample::{Grid, bilinear_axis, warp_bilinear};
