//! The engines verge runs models on, named once for the device's `backend`,
//! the edge's `--engine` and the app manifest.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum EngineKind {
    /// tract: pure Rust, compiled into the device host and into the edge's
    /// provider component; always there.
    #[default]
    Tract,
    /// ONNX Runtime: the device's `libonnxruntime`, or at the edge its Node
    /// binding (native, multi-threaded).
    Onnxruntime,
    /// verge's compact engine: tree ensembles, linear models and small MLPs
    /// in a few hundred KB (what the edge's viewer triggers run).
    Compact,
    /// TensorFlow Lite's C library, on the device only: `.tflite` models.
    Tensorflowlite,
}

impl EngineKind {
    /// Smallest first.
    pub const ALL: [EngineKind; 4] = [
        EngineKind::Compact,
        EngineKind::Tract,
        EngineKind::Onnxruntime,
        EngineKind::Tensorflowlite,
    ];

    /// The engines a Lambda@Edge package can carry, smallest first.
    pub const EDGE: [EngineKind; 3] = [
        EngineKind::Compact,
        EngineKind::Tract,
        EngineKind::Onnxruntime,
    ];

    /// The engine a model file is for when nobody says: a TensorFlow Lite
    /// flatbuffer (its `TFL3` identifier at offset 4) or, otherwise, ONNX.
    pub fn runs_tflite(bytes: &[u8]) -> bool {
        bytes.get(4..8) == Some(b"TFL3")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Tract => "tract",
            EngineKind::Onnxruntime => "onnxruntime",
            EngineKind::Compact => "compact",
            EngineKind::Tensorflowlite => "tensorflowlite",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<EngineKind, String> {
        EngineKind::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = EngineKind::ALL.iter().map(|e| e.as_str()).collect();
                format!("unknown engine '{s}': expected one of {}", names.join(", "))
            })
    }
}
