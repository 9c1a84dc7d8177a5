//! The part of ONNX's protobuf this engine reads, decoded by hand: a model,
//! its graph, nodes, attributes, initializers and declared types. A reader of
//! a few hundred lines instead of a protobuf crate and generated code keeps
//! the provider component small; fields it does not use are skipped.

use std::fmt;

/// Why a file is not an ONNX model this reader can take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

fn bad<T>(what: impl Into<String>) -> Result<T> {
    Err(DecodeError(what.into()))
}

/// One protobuf field value as it is on the wire.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return bad("the file ends inside a number (truncated?)");
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bad("a number longer than 10 bytes")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return bad("a field runs past the end of the file (truncated?)");
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field number and value, or `None` at the end.
    fn next(&mut self) -> Result<Option<(u32, Wire<'a>)>> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3)
            .map_err(|_| DecodeError("a field number out of range".into()))?;
        if field == 0 {
            return bad("field number 0");
        }
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            2 => {
                let n = usize::try_from(self.varint()?)
                    .map_err(|_| DecodeError("a length out of range".into()))?;
                Wire::Bytes(self.take(n)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            w => return bad(format!("wire type {w} (not ONNX)")),
        };
        Ok(Some((field, wire)))
    }
}

fn int(w: &Wire) -> Result<i64> {
    match w {
        Wire::Varint(v) => Ok(*v as i64),
        _ => bad("expected an integer"),
    }
}

fn bytes<'a>(w: &Wire<'a>) -> Result<&'a [u8]> {
    match w {
        Wire::Bytes(b) => Ok(b),
        _ => bad("expected bytes"),
    }
}

fn string(w: &Wire) -> Result<String> {
    String::from_utf8(bytes(w)?.to_vec()).map_err(|_| DecodeError("a name is not UTF-8".into()))
}

/// A repeated varint field, packed or not.
fn ints(w: &Wire, out: &mut Vec<i64>) -> Result<()> {
    match w {
        Wire::Varint(v) => out.push(*v as i64),
        Wire::Bytes(b) => {
            let mut r = Reader::new(b);
            while r.pos < b.len() {
                out.push(r.varint()? as i64);
            }
        }
        _ => return bad("expected integers"),
    }
    Ok(())
}

/// A repeated fixed32 (float) field, packed or not.
fn fixed32s(w: &Wire, out: &mut Vec<u32>) -> Result<()> {
    match w {
        Wire::Fixed32(v) => out.push(*v),
        Wire::Bytes(b) if b.len() % 4 == 0 => out.extend(
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))),
        ),
        _ => return bad("expected 32-bit numbers"),
    }
    Ok(())
}

/// A repeated fixed64 (double) field, packed or not.
fn fixed64s(w: &Wire, out: &mut Vec<u64>) -> Result<()> {
    match w {
        Wire::Fixed64(v) => out.push(*v),
        Wire::Bytes(b) if b.len() % 8 == 0 => out.extend(
            b.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
        ),
        _ => return bad("expected 64-bit numbers"),
    }
    Ok(())
}

#[derive(Debug, Default)]
pub struct ModelProto {
    /// (domain, version); "" and "ai.onnx" are the default domain.
    pub opsets: Vec<(String, i64)>,
    pub graph: Option<GraphProto>,
}

#[derive(Debug, Default)]
pub struct GraphProto {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    /// Sparse initializers are not read; their names, to refuse the model.
    pub sparse_initializers: usize,
}

#[derive(Debug, Default)]
pub struct NodeProto {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub attributes: Vec<Attribute>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Float(f32),
    Int(i64),
    String(Vec<u8>),
    Tensor(TensorProto),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Vec<u8>>),
    /// A graph, a sparse tensor, a type or a list of them: nothing this engine takes.
    Other(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub name: String,
    pub value: AttrValue,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorProto {
    pub name: String,
    pub dims: Vec<i64>,
    pub data_type: i32,
    pub float_data: Vec<u32>,
    pub int32_data: Vec<i64>,
    pub int64_data: Vec<i64>,
    pub double_data: Vec<u64>,
    pub uint64_data: Vec<i64>,
    pub string_data: usize,
    pub raw_data: Option<Vec<u8>>,
    /// Data kept in another file (data_location = EXTERNAL).
    pub external: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TypeInfo {
    /// elem_type (0 when unset) and the dims (`None`: rank unknown).
    Tensor {
        elem_type: i32,
        dims: Option<Vec<DimInfo>>,
    },
    NotATensor,
    Unset,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DimInfo {
    Value(i64),
    Param(String),
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub ty: TypeInfo,
}

pub fn decode_model(buf: &[u8]) -> Result<ModelProto> {
    let mut m = ModelProto::default();
    let mut r = Reader::new(buf);
    while let Some((f, w)) = r.next()? {
        match f {
            7 => m.graph = Some(graph(bytes(&w)?)?),
            8 => m.opsets.push(opset(bytes(&w)?)?),
            _ => {}
        }
    }
    Ok(m)
}

fn opset(buf: &[u8]) -> Result<(String, i64)> {
    let (mut domain, mut version) = (String::new(), 0);
    let mut r = Reader::new(buf);
    while let Some((f, w)) = r.next()? {
        match f {
            1 => domain = string(&w)?,
            2 => version = int(&w)?,
            _ => {}
        }
    }
    Ok((domain, version))
}

fn graph(buf: &[u8]) -> Result<GraphProto> {
    let mut g = GraphProto::default();
    let mut r = Reader::new(buf);
    while let Some((f, w)) = r.next()? {
        match f {
            1 => g.nodes.push(node(bytes(&w)?)?),
            5 => g.initializers.push(tensor(bytes(&w)?)?),
            11 => g.inputs.push(value_info(bytes(&w)?)?),
            12 => g.outputs.push(value_info(bytes(&w)?)?),
            15 => g.sparse_initializers += 1,
            _ => {}
        }
    }
    Ok(g)
}

fn node(buf: &[u8]) -> Result<NodeProto> {
    let mut n = NodeProto::default();
    let mut r = Reader::new(buf);
    while let Some((f, w)) = r.next()? {
        match f {
            1 => n.inputs.push(string(&w)?),
            2 => n.outputs.push(string(&w)?),
            3 => n.name = string(&w)?,
            4 => n.op_type = string(&w)?,
            5 => n.attributes.push(attribute(bytes(&w)?)?),
            7 => n.domain = string(&w)?,
            _ => {}
        }
    }
    Ok(n)
}

fn attribute(buf: &[u8]) -> Result<Attribute> {
    let mut name = String::new();
    let mut ty = 0;
    let (mut f32v, mut intv, mut s, mut t) = (None, None, None, None);
    let (mut floats, mut ints_v, mut strings) = (Vec::new(), Vec::new(), Vec::new());
    let mut other = None;
    let mut r = Reader::new(buf);
    while let Some((f, w)) = r.next()? {
        match f {
            1 => name = string(&w)?,
            20 => ty = int(&w)?,
            2 => {
                let mut v = Vec::new();
                fixed32s(&w, &mut v)?;
                f32v = v.last().map(|b| f32::from_bits(*b));
            }
            3 => intv = Some(int(&w)?),
            4 => s = Some(bytes(&w)?.to_vec()),
            5 => t = Some(tensor(bytes(&w)?)?),
            6 => other = Some("a graph"),
            7 => {
                let mut v = Vec::new();
                fixed32s(&w, &mut v)?;
                floats.extend(v.into_iter().map(f32::from_bits));
            }
            8 => ints(&w, &mut ints_v)?,
            9 => strings.push(bytes(&w)?.to_vec()),
            10 => other = Some("tensors"),
            11 => other = Some("graphs"),
            14 | 15 => other = Some("a type"),
            21 => other = Some("a reference to a function attribute"),
            22 | 23 => other = Some("a sparse tensor"),
            _ => {}
        }
    }
    // `type` says which field holds the value; files from old writers omit it.
    let value = match ty {
        1 => AttrValue::Float(f32v.unwrap_or(0.0)),
        2 => AttrValue::Int(intv.unwrap_or(0)),
        3 => AttrValue::String(s.unwrap_or_default()),
        4 => match t {
            Some(t) => AttrValue::Tensor(t),
            None => return bad(format!("attribute '{name}' has no tensor")),
        },
        6 => AttrValue::Floats(floats),
        7 => AttrValue::Ints(ints_v),
        8 => AttrValue::Strings(strings),
        5 => AttrValue::Other("a graph"),
        9 => AttrValue::Other("tensors"),
        10 => AttrValue::Other("graphs"),
        11 | 12 => AttrValue::Other("a sparse tensor"),
        13 | 14 => AttrValue::Other("a type"),
        _ => match (f32v, intv, s, t, other) {
            (_, _, _, _, Some(o)) => AttrValue::Other(o),
            (Some(v), _, _, _, _) => AttrValue::Float(v),
            (_, Some(v), _, _, _) => AttrValue::Int(v),
            (_, _, Some(v), _, _) => AttrValue::String(v),
            (_, _, _, Some(v), _) => AttrValue::Tensor(v),
            _ if !floats.is_empty() => AttrValue::Floats(floats),
            _ if !strings.is_empty() => AttrValue::Strings(strings),
            _ => AttrValue::Ints(ints_v),
        },
    };
    Ok(Attribute { name, value })
}

fn tensor(buf: &[u8]) -> Result<TensorProto> {
    let mut t = TensorProto::default();
    let mut r = Reader::new(buf);
    while let Some((f, w)) = r.next()? {
        match f {
            1 => ints(&w, &mut t.dims)?,
            2 => t.data_type = int(&w)? as i32,
            4 => fixed32s(&w, &mut t.float_data)?,
            5 => ints(&w, &mut t.int32_data)?,
            6 => t.string_data += 1,
            7 => ints(&w, &mut t.int64_data)?,
            8 => t.name = string(&w)?,
            9 => t.raw_data = Some(bytes(&w)?.to_vec()),
            10 => fixed64s(&w, &mut t.double_data)?,
            11 => ints(&w, &mut t.uint64_data)?,
            13 => t.external = true,
            14 => t.external |= int(&w)? == 1,
            _ => {}
        }
    }
    Ok(t)
}

fn value_info(buf: &[u8]) -> Result<ValueInfo> {
    let mut v = ValueInfo {
        name: String::new(),
        ty: TypeInfo::Unset,
    };
    let mut r = Reader::new(buf);
    while let Some((f, w)) = r.next()? {
        match f {
            1 => v.name = string(&w)?,
            2 => v.ty = type_info(bytes(&w)?)?,
            _ => {}
        }
    }
    Ok(v)
}

fn type_info(buf: &[u8]) -> Result<TypeInfo> {
    let mut ty = TypeInfo::Unset;
    let mut r = Reader::new(buf);
    while let Some((f, w)) = r.next()? {
        match f {
            1 => {
                let (mut elem_type, mut dims) = (0, None);
                let mut t = Reader::new(bytes(&w)?);
                while let Some((f, w)) = t.next()? {
                    match f {
                        1 => elem_type = int(&w)? as i32,
                        2 => dims = Some(shape(bytes(&w)?)?),
                        _ => {}
                    }
                }
                ty = TypeInfo::Tensor { elem_type, dims };
            }
            4 | 5 | 8 | 9 => ty = TypeInfo::NotATensor,
            _ => {}
        }
    }
    Ok(ty)
}

fn shape(buf: &[u8]) -> Result<Vec<DimInfo>> {
    let mut dims = Vec::new();
    let mut r = Reader::new(buf);
    while let Some((f, w)) = r.next()? {
        if f != 1 {
            continue;
        }
        let mut d = DimInfo::Unknown;
        let mut dr = Reader::new(bytes(&w)?);
        while let Some((f, w)) = dr.next()? {
            match f {
                1 => d = DimInfo::Value(int(&w)?),
                2 => d = DimInfo::Param(string(&w)?),
                _ => {}
            }
        }
        dims.push(d);
    }
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_and_garbage_are_errors() {
        assert!(decode_model(b"\xff\xff\xff\xff this is not an ONNX model").is_err());
        // field 7 (graph), length 100, 3 bytes of it
        assert!(decode_model(&[0x3a, 100, 1, 2, 3]).is_err());
        assert!(decode_model(&[]).unwrap().graph.is_none());
    }

    #[test]
    fn packed_and_unpacked_repeated_fields() {
        let mut v = Vec::new();
        ints(&Wire::Bytes(&[1, 0x96, 0x01]), &mut v).unwrap();
        ints(&Wire::Varint(7), &mut v).unwrap();
        assert_eq!(v, [1, 150, 7]);
        let mut f = Vec::new();
        fixed32s(&Wire::Bytes(&1.5f32.to_le_bytes()), &mut f).unwrap();
        assert_eq!(f32::from_bits(f[0]), 1.5);
    }
}
