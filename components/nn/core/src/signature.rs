//! What a model declares: its inputs and outputs, with names, element types
//! and dimensions, some of them symbolic.

use std::fmt;

use crate::Datum;

/// One dimension of a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(u64),
    /// Set per call, and the same wherever the symbol appears.
    Symbol(String),
    /// Set per call; the model does not name it.
    Any,
}

impl Dim {
    /// `Symbol` for a named dimension, `Any` for an unnamed one.
    pub fn symbolic(name: &str) -> Dim {
        if name.is_empty() {
            Dim::Any
        } else {
            Dim::Symbol(name.to_string())
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
            Dim::Any => f.write_str("?"),
        }
    }
}

/// An input or output as the model declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub datum: Datum,
    /// `None` when the model does not declare the rank.
    pub dims: Option<Vec<Dim>>,
}

impl Port {
    pub fn new(name: impl Into<String>, datum: Datum, dims: Option<Vec<Dim>>) -> Port {
        Port {
            name: name.into(),
            datum,
            dims,
        }
    }
}

/// `'bytes' i32[batch, 2048]`
impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' {}", self.name, self.datum)?;
        match &self.dims {
            Some(dims) => {
                let v: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
                write!(f, "[{}]", v.join(", "))
            }
            None => f.write_str("[…]"),
        }
    }
}

/// A model's inputs and outputs, in its order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

pub(crate) fn list(ports: &[Port]) -> String {
    if ports.is_empty() {
        return "none".into();
    }
    let v: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    v.join(", ")
}

impl Signature {
    /// Inputs must be `wasi:nn` types as they are; outputs as they are or
    /// widened. An output whose type the model leaves open is judged when
    /// it is computed.
    pub(crate) fn check_carried(&self) -> Result<(), String> {
        for p in &self.inputs {
            if p.datum.carried().is_none() {
                return Err(format!(
                    "input {p} is a type wasi:nn cannot carry (it carries {})",
                    crate::ElementType::ALL.map(|t| t.as_str()).join(", ")
                ));
            }
        }
        for p in &self.outputs {
            if p.datum.as_output().is_none() && p.datum != Datum::Other {
                return Err(format!("output {p} is a type wasi:nn cannot carry"));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}) -> ({})", list(&self.inputs), list(&self.outputs))
    }
}
