//! The component: request body in, Magika's verdict out.
//!
//! Deployment settings (`wasi:config/store`):
//! * `model`: the graph name to load (default `magika`);
//! * `mode`: `respond` (a JSON body) or `annotate` (headers on the request);
//!   the default is `annotate` at the edge and `respond` elsewhere;
//! * `deny-groups`: comma-separated Magika groups (e.g. `executable,archive`)
//!   answered with 415 instead.

use magika::{Prepared, Verdict};

wit_bindgen::generate!({
    path: "../../wit",
    world: "verge:inference/component",
    generate_all,
});

use exports::verge::inference::handler::Guest;
use verge::inference::host::{self, Placement};
use verge::inference::types::{Error, Outcome, Request, Response};
use wasi::config::store as config;
use wasi::nn::{graph, tensor};

struct FileType;

fn setting(key: &str) -> Option<String> {
    config::get(key).ok().flatten()
}

fn nn_error(e: wasi::nn::errors::Error) -> Error {
    Error::Model(format!("{:?}: {}", e.code(), e.data()))
}

fn infer(features: &[i32; magika::FEATURES]) -> Result<Vec<f32>, Error> {
    let name = setting("model").unwrap_or_else(|| "magika".into());
    let graph = graph::load_by_name(&name).map_err(nn_error)?;
    let ctx = graph.init_execution_context().map_err(nn_error)?;
    let bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
    let input = tensor::Tensor::new(
        &[1, magika::FEATURES as u32],
        tensor::TensorType::I32,
        &bytes,
    );
    let outputs = ctx
        .compute(vec![("bytes".to_string(), input)])
        .map_err(nn_error)?;
    let (_, scores) = outputs
        .into_iter()
        .next()
        .ok_or_else(|| Error::Model("the model returned no output".into()))?;
    if scores.ty() != tensor::TensorType::Fp32 {
        return Err(Error::Model(format!(
            "expected fp32 scores, got {:?}",
            scores.ty()
        )));
    }
    Ok(scores
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn json(v: &Verdict) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let dl = v
        .dl_label
        .map_or("null".to_string(), |l| format!("\"{}\"", esc(l)));
    format!(
        "{{\"label\":\"{}\",\"group\":\"{}\",\"mime_type\":\"{}\",\"description\":\"{}\",\"is_text\":{},\"score\":{},\"dl_label\":{dl}}}",
        esc(v.output.label),
        esc(v.output.group),
        esc(v.output.mime_type),
        esc(v.output.description),
        v.output.is_text,
        v.score,
    )
}

impl Guest for FileType {
    fn handle(req: Request) -> Result<Outcome, Error> {
        if req.truncated {
            return Ok(Outcome::Defer(format!(
                "body truncated by the host at {} bytes; Magika needs the end of the file too",
                req.body.len()
            )));
        }
        let verdict = match magika::prepare(&req.body) {
            Prepared::Decided(label) => magika::decided(label),
            Prepared::Model(features) => {
                magika::decide(&infer(&features)?).map_err(Error::Model)?
            }
        };
        let denied = setting("deny-groups")
            .is_some_and(|groups| groups.split(',').any(|g| g.trim() == verdict.output.group));
        let annotate = match setting("mode").as_deref() {
            Some("annotate") => true,
            Some("respond") => false,
            Some(other) => {
                return Err(Error::Internal(format!(
                    "setting mode = {other:?}: expected \"respond\" or \"annotate\""
                )));
            }
            None => matches!(
                host::get_placement(),
                Placement::EdgeViewer | Placement::EdgeOrigin
            ),
        };
        let body = json(&verdict);
        if denied {
            return Ok(Outcome::Respond(Response {
                status: 415,
                content_type: "application/json".into(),
                body: body.into_bytes(),
                headers: vec![],
            }));
        }
        if annotate {
            return Ok(Outcome::Annotate(vec![
                ("x-file-type".into(), verdict.output.label.into()),
                ("x-file-type-group".into(), verdict.output.group.into()),
                ("x-file-type-mime".into(), verdict.output.mime_type.into()),
                ("x-file-type-score".into(), format!("{}", verdict.score)),
            ]));
        }
        Ok(Outcome::Respond(Response {
            status: 200,
            content_type: "application/json".into(),
            body: body.into_bytes(),
            headers: vec![],
        }))
    }
}

export!(FileType);
